"""Checks run on every fit so that nothing fails silently (METHOD.md §5.9 pitfalls 3, 4, 5).

Porian et al.'s released fits contain parameters that never left their start values; a fit must say when a
parameter sits on a bound, at the edge of the start grid or at its initial value, how many starts reached the best
basin, what the optimiser's status was, and what the residuals look like. Each check returns plain data; the
human-readable `warnings` list is what the CLI prints.
"""
import numpy as np

# A start is in the best basin when its objective is within this relative distance of the best one.
BASIN_RTOL = 1e-6
FEW_STARTS = 100  # ml-scalefit: ~10 starts leave ~3% gaps on the exponents; ~100 are needed (§5.5)


def in_best_basin(f_S, rtol: float = BASIN_RTOL, atol: float = 0.0) -> np.ndarray:
  """[S] bool: the starts whose (finite) objective is within rtol·|best| + atol of the best.

  atol is the caller's rounding floor in objective units (zero-residual fits end at ~1e-30 with scatter of the same
  order; every start there reached the truth)."""
  f = np.asarray(f_S, np.float64)
  finite = np.isfinite(f)
  if not finite.any():
    return finite
  best = f[finite].min()
  return finite & (f <= best + rtol * abs(best) + atol)


def basin_count(f_S, rtol: float = BASIN_RTOL, atol: float = 0.0) -> int:
  """Number of starts in the best basin (`in_best_basin`)."""
  return int(np.sum(in_best_basin(f_S, rtol, atol)))


def count_basins(f_S, rtol: float = BASIN_RTOL, atol: float = 0.0) -> int:
  """Distinct final objective levels: sorted objectives separated by more than rtol·|f| + atol start a new basin."""
  f = np.sort(np.asarray(f_S, np.float64)[np.isfinite(f_S)])
  if f.size == 0:
    return 0
  return int(1 + np.sum(np.diff(f) > rtol * np.abs(f[1:]) + atol))


def parameter_flags(names, x_P, x0_P, lower=None, upper=None, grid_lo=None, grid_hi=None, rtol: float = 1e-9):
  """Names of parameters on a bound, outside/at the edge of the start grid, or never moved from their start."""
  x_P, x0_P = np.asarray(x_P, np.float64), np.asarray(x0_P, np.float64)
  tol = rtol * np.maximum(1.0, np.abs(x_P))
  flags = {"on_bound": [], "at_grid_edge": [], "at_initial_value": []}
  for i, name in enumerate(names):
    if (lower is not None and abs(x_P[i] - lower[i]) <= tol[i]) or (upper is not None and abs(x_P[i] - upper[i]) <= tol[i]):
      flags["on_bound"].append(name)
    # The grid brackets the answer only if the answer lies strictly inside it.
    if grid_lo is not None and grid_hi is not None and grid_hi[i] > grid_lo[i]:
      if x_P[i] <= grid_lo[i] + tol[i] or x_P[i] >= grid_hi[i] - tol[i]:
        flags["at_grid_edge"].append(name)
    if abs(x_P[i] - x0_P[i]) <= tol[i]:
      flags["at_initial_value"].append(name)
  return flags


def residual_summary(r_n, delta: float | None = None) -> dict:
  """Moments and extremes of the residuals; with Huber, the share beyond δ says how L1-like the fit was."""
  r_n = np.asarray(r_n, np.float64)
  out = {"n": int(r_n.size), "mean": float(r_n.mean()), "std": float(r_n.std()),
         "rmse": float(np.sqrt(np.mean(r_n**2))), "median_abs": float(np.median(np.abs(r_n))),
         "max_abs": float(np.max(np.abs(r_n)))}
  if delta is not None:
    out["frac_beyond_delta"] = float(np.mean(np.abs(r_n) > delta))
  return out


def condition_number(jacobian_nxP) -> float:
  """cond(JᵀJ) of the residual Jacobian: how well the design pins the parameters down."""
  s = np.linalg.svd(np.asarray(jacobian_nxP, np.float64), compute_uv=False)
  return float((s[0] / s[-1]) ** 2) if s[-1] > 0 else float("inf")


def approx_standard_errors(jacobian_nxP, r_n) -> np.ndarray:
  """Gauss–Newton standard errors σ·sqrt(diag((JᵀJ)⁻¹)) with a robust σ (1.4826·MAD of the residuals).

  Asymptotic and optimistic (the Chinchilla bootstrap SD of B is ~3x larger); a screen for parameters the data do
  not pin down, not a confidence interval. Use the bootstrap for those.
  """
  r_n = np.asarray(r_n, np.float64)
  sigma = 1.4826 * np.median(np.abs(r_n - np.median(r_n)))
  cov = np.linalg.pinv(np.asarray(jacobian_nxP, np.float64).T @ np.asarray(jacobian_nxP, np.float64))
  return sigma * np.sqrt(np.maximum(np.diag(cov), 0.0))


def warnings_for(flags: dict, status: str, n_starts: int | None = None, n_basin: int = 0,
                 loose: dict | None = None) -> list[str]:
  """The plain-language list a user sees; empty means nothing looked wrong."""
  out = []
  if not status.startswith("converged"):
    out.append(f"best start did not converge cleanly (status {status})")
  for name in flags.get("on_bound", []):
    out.append(f"{name} is on a bound: the optimum may lie beyond it")
  for name in flags.get("at_grid_edge", []):
    out.append(f"{name} is at or outside the edge of the start grid: widen the grid")
  for name in flags.get("at_initial_value", []):
    out.append(f"{name} never moved from its start value: the optimiser may have stopped at once")
  if n_starts is None:  # a single-start method (grid search + refinement): no start statistics
    pass
  elif n_starts < FEW_STARTS:
    out.append(f"only {n_starts} starts: fewer than {FEW_STARTS} leave percent-level gaps on the exponents")
  elif n_basin < 2:
    out.append("the best basin was reached by a single start: the optimum may not be the global one")
  for name, se in (loose or {}).items():
    out.append(f"{name} is poorly identified (approximate relative standard error {se:.0%}): compare alpha, beta, "
               f"E, a and predictions tightly and {name} loosely; see the bootstrap CI, or use VPNLS (METHOD §5.9.5)")
  return out
