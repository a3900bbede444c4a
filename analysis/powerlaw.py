"""Ordinary least squares in log space: power laws y = k·x^p and log-linear laws with several regressors.

Used by Approaches 1 and 2 (N*(C), D*(C)) and by the batch-size and learning-rate laws. Standard errors are the
classical OLS ones (σ̂²(XᵀX)⁻¹ with n − p degrees of freedom); with two points they are undefined (NaN).
"""
import numpy as np

from mdm_jax.errors import UserError


def ols(design_nxp, y_n, weights_n=None) -> dict:
  """Weighted OLS; returns coefficients, standard errors, R² and n."""
  x = np.asarray(design_nxp, np.float64)
  y = np.asarray(y_n, np.float64)
  w = np.ones_like(y) if weights_n is None else np.asarray(weights_n, np.float64)
  sw = np.sqrt(w)
  coef, *_ = np.linalg.lstsq(x * sw[:, None], y * sw, rcond=None)
  resid = y - x @ coef
  n, p = x.shape
  dof = w.sum() - p if weights_n is not None else n - p
  ybar = np.average(y, weights=w)
  ss_tot = float(np.sum(w * (y - ybar) ** 2))
  ss_res = float(np.sum(w * resid**2))
  if dof > 0:
    cov = ss_res / dof * np.linalg.pinv((x * w[:, None]).T @ x)
    se = np.sqrt(np.maximum(np.diag(cov), 0.0))
  else:
    se = np.full(p, np.nan)
  return {"coef": coef, "se": se, "r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan"), "n": int(n),
          "residuals": resid}


def fit_power_law(x_n, y_n, name: str = "y", weights_n=None) -> dict:
  """y = k·x^p by OLS of log y on log x. Needs >= 2 distinct positive x."""
  x, y = np.asarray(x_n, np.float64), np.asarray(y_n, np.float64)
  if x.size < 2 or np.unique(x).size < 2:
    raise UserError(name, f"a power law needs at least 2 distinct points, got {np.unique(x).size}", "add budgets")
  if np.any(x <= 0) or np.any(y <= 0):
    raise UserError(name, "power-law fits need positive values", "check the table")
  out = ols(np.stack([np.ones_like(x), np.log(x)], 1), np.log(y), weights_n)
  return {"exponent": float(out["coef"][1]), "prefactor": float(np.exp(out["coef"][0])),
          "log_prefactor": float(out["coef"][0]), "se_exponent": float(out["se"][1]),
          "se_log_prefactor": float(out["se"][0]), "r2": float(out["r2"]), "n": out["n"]}
