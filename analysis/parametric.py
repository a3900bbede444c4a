"""Approach 3: fit L(N, D) = E + A/N^α + B/D^β on all runs (METHOD.md §5.2, Hoffmann App. D.2 / Epoch).

Log-space LSE form, Huber(δ = 1e-3) summed over points, L-BFGS-B from every point of the 4,500-start grid, keep the
lowest objective. All starts run together in the batched optimiser (analysis.lbfgs), whose stopping rules are
relative, so a summed and an averaged objective give the same fit (§5.9 pitfall 1). Diagnostics report the status,
how many starts reached the best basin, parameters on a bound / at the grid edge / at their start, the residuals and
the conditioning (pitfalls 3–5).
"""
import itertools

import numpy as np

from analysis import diagnostics as diag
from analysis import lbfgs
from analysis import table as table_lib
from analysis.objective import PARAM_NAMES, LseObjective, to_natural
from analysis.results import ParametricFit
from mdm_jax.errors import UserError

# The Hoffmann/Epoch start grid: α, β ∈ {0, .5, …, 2}; e ∈ {−1, −.5, …, 1}; a, b ∈ {0, 5, …, 25} → 4,500 starts.
DEFAULT_GRID = {"a": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0), "b": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
                "e": (-1.0, -0.5, 0.0, 0.5, 1.0), "alpha": (0.0, 0.5, 1.0, 1.5, 2.0), "beta": (0.0, 0.5, 1.0, 1.5, 2.0)}
# Exponents are kept in [0, 5]: a negative exponent is not a scaling law, and a fit that runs into either bound is
# flagged rather than left to drift. a, b, e are free.
DEFAULT_BOUNDS = {"alpha": (0.0, 5.0), "beta": (0.0, 5.0)}
NATURAL_NAMES = {"a": "A", "b": "B", "e": "E", "alpha": "alpha", "beta": "beta"}
MIN_POINTS = 6  # more points than the 5 parameters
ZERO_RESIDUAL = 1e-9  # max |log-residual| below which a stalled search has simply reached the data exactly
LOOSE_SE = 0.1  # relative standard error of A, B or E above which it is reported as poorly identified


def start_grid(grid: dict | None = None) -> np.ndarray:
  """[S, 5] starts in PARAM_NAMES order, the product of the per-parameter values."""
  grid = DEFAULT_GRID if grid is None else grid
  missing = [k for k in PARAM_NAMES if k not in grid]
  if missing:
    raise UserError("grid", f"start grid lacks {', '.join(missing)}", f"give values for {', '.join(PARAM_NAMES)}")
  return np.array(list(itertools.product(*(grid[k] for k in PARAM_NAMES))), dtype=np.float64)


def box(bounds: dict | None):
  bounds = DEFAULT_BOUNDS if bounds is None else bounds
  lower = np.array([bounds.get(k, (-np.inf, np.inf))[0] for k in PARAM_NAMES], np.float64)
  upper = np.array([bounds.get(k, (-np.inf, np.inf))[1] for k in PARAM_NAMES], np.float64)
  return lower, upper


def as_table(data) -> table_lib.RunTable:
  return data if isinstance(data, table_lib.RunTable) else table_lib.from_frame(data)


def make_objective(table: table_lib.RunTable, loss: str = "huber", delta: float = 1e-3, reduction: str = "sum",
                   weights_Rxn=None) -> LseObjective:
  table_lib.require_columns(table, ("params", "tokens", "loss"), "Approach 3")
  if loss not in ("huber", "mse"):
    raise UserError("loss", f"unknown loss {loss!r}", "use 'huber' or 'mse'")
  if reduction not in ("sum", "mean"):
    raise UserError("reduction", f"unknown reduction {reduction!r}", "use 'sum' (the reference) or 'mean'")
  if not delta > 0:
    raise UserError("delta", f"must be > 0, got {delta}", "the reference is 1e-3")
  n = len(table)
  return LseObjective(np.log(table.column("params")), np.log(table.column("tokens")), np.log(table.column("loss")),
                      loss=loss, delta=delta, scale=1.0 / n if reduction == "mean" else 1.0, weights_Rxn=weights_Rxn)


def fit_approach3(data, *, loss: str = "huber", delta: float = 1e-3, reduction: str = "sum", starts=None,
                  bounds: dict | None = None, max_iter: int = 2000, ftol: float = 1e-11,
                  gtol: float = 1e-10) -> ParametricFit:
  """Multi-start fit; `starts` is a grid dict, an [S, 5] array in PARAM_NAMES order, or None (the 4,500 grid)."""
  table = as_table(data)
  table_lib.require_rows(table, MIN_POINTS, "Approach 3 (5 parameters)")
  obj = make_objective(table, loss, delta, reduction)
  x0 = start_grid(starts) if starts is None or isinstance(starts, dict) else np.atleast_2d(np.asarray(starts, float))
  if x0.ndim != 2 or x0.shape[1] != 5:
    raise UserError("starts", f"must be [S, 5] in order {PARAM_NAMES}, got shape {x0.shape}", "")
  lower, upper = box(bounds)
  res = lbfgs.minimize(obj, x0, lower, upper, max_iter=max_iter, ftol=ftol, gtol=gtol)
  best = best_start(res, rounding_floor(obj))
  estimator = {"form": "log L = LSE(a - alpha log N, b - beta log D, e)", "loss": loss, "delta": delta,
               "reduction": reduction, "space": "log", "optimiser": "batched projected L-BFGS (analysis.lbfgs)",
               "n_starts": int(x0.shape[0]), "bounds": {k: [float(lower[i]), float(upper[i])]
                                                       for i, k in enumerate(PARAM_NAMES)},
               "ftol": ftol, "gtol": gtol, "max_iter": max_iter}
  d = fit_diagnostics(obj, res, best, x0, lower, upper, table)
  return ParametricFit(method="approach3", objective=float(res.f[best]), estimator=estimator, diagnostics=d,
                       input=table.provenance(), **to_natural(res.x[best]))


def rounding_floor(obj: LseObjective) -> float:
  """The rounding floor in objective units: every residual at ZERO_RESIDUAL (scale-free through obj.scale)."""
  return obj.scale * obj.log_n.size * 0.5 * ZERO_RESIDUAL**2


def best_start(res: lbfgs.BatchResult, floor: float) -> int:
  """The start with the lowest objective; when its search stalled (a flat ridge's floating-point floor), the best
  start that converged in the same basin (same objective within the basin tolerance) stands for it, so one
  stalled start among thousands that agree does not mark the fit as unconverged."""
  f = np.where(np.isfinite(res.f), res.f, np.inf)
  best = int(np.argmin(f))
  converged = res.status <= lbfgs.CONVERGED_F   # CONVERGED_GRAD or CONVERGED_F
  if converged[best]:
    return best
  agreeing = converged & diag.in_best_basin(f, atol=floor)
  return int(np.argmin(np.where(agreeing, f, np.inf))) if agreeing.any() else best


def fit_diagnostics(obj: LseObjective, res: lbfgs.BatchResult, best: int, x0, lower, upper,
                    table: table_lib.RunTable) -> dict:
  """Everything a reader needs to trust (or not) the best start."""
  x = res.x[best]
  names = [NATURAL_NAMES[k] for k in PARAM_NAMES]
  flags = diag.parameter_flags(names, x, x0[best], lower, upper, x0.min(0), x0.max(0))
  status = lbfgs.STATUS_NAMES[int(res.status[best])]
  floor = rounding_floor(obj)
  n_basin = diag.basin_count(res.f, atol=floor)
  r = obj.residuals(x)[0]
  if res.status[best] == lbfgs.STALLED and np.max(np.abs(r)) < ZERO_RESIDUAL:
    status = "converged_zero_residual"  # noise-free data: nothing left to decrease but rounding
  jac = jacobian_log_prediction(x, obj.log_n, obj.log_d)
  cond = diag.condition_number(jac)
  se = diag.approx_standard_errors(jac, r)
  # SEs of a, b, e are relative SEs of A, B, E (log space); above LOOSE_SE the parameter is poorly identified.
  loose = {NATURAL_NAMES[k]: float(se[i]) for i, k in enumerate(PARAM_NAMES[:3]) if se[i] > LOOSE_SE}
  pg = lbfgs.projected_gradient(x[None], res.grad[best][None], lower, upper)[0]
  warnings = diag.warnings_for(flags, status, x0.shape[0], n_basin, loose)
  E = float(np.exp(x[2]))
  if E < 1e-3 * float(np.min(table.column("loss"))):
    warnings.append(f"E = {E:.3g} collapsed towards 0: the irreducible loss is not identified by these runs")
  warnings.extend(table_warnings(table))
  return {"status": status, "x_log": x.tolist(), "status_counts": res.status_counts(), "n_starts": int(x0.shape[0]),
          "best_basin_count": n_basin, "n_basins": diag.count_basins(res.f, atol=floor),
          "best_start": x0[best].tolist(), "iterations_best": int(res.n_iter[best]), "evaluations": int(res.n_eval),
          "projected_gradient_max_rel": float(np.max(np.abs(pg)) / max(abs(res.f[best]), 1e-300)), **flags,
          "condition_number": cond, "approx_se_log": {k: float(se[i]) for i, k in enumerate(PARAM_NAMES)},
          "residuals": diag.residual_summary(r, obj.delta if obj.loss == "huber" else None), "warnings": warnings}


def jacobian_log_prediction(x_P, log_n, log_d):
  """d log L̂ / d(a, b, e, α, β) at x: the softmax shares of the three terms and their exponent derivatives."""
  a, b, e, alpha, beta = x_P
  t = np.stack([a - alpha * log_n, b - beta * log_d, np.full_like(log_n, e)])
  s = np.exp(t - t.max(0))
  s /= s.sum(0)
  return np.stack([s[0], s[1], s[2], -s[0] * log_n, -s[1] * log_d], axis=1)


def table_warnings(table: table_lib.RunTable) -> list[str]:
  """Input-side warnings: mixed hyperparameter settings (§5.9 pitfall 9), unspecified conventions (§6.2)."""
  out = []
  mixed = table.metadata.get("mixed_settings") or []
  if mixed:
    out.append(f"runs mix settings {', '.join(mixed)}: hyperparameters move exponents (METHOD §5.9.9)")
  if table.params_convention == "unspecified":
    out.append("parameter-counting convention unspecified: exponents are only comparable within one convention")
  return out
