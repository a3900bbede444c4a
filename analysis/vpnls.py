"""VPNLS (variable projection): for fixed (α, β), E, A, B ≥ 0 by non-negative least squares (METHOD.md §5.2).

    L̂ = E + A·N^−α + B·D^−β,   objective = Σ_i w_i (L_i − L̂_i)²   (linear-space RSS, as Open-Athena's fit_vpnls)

Only (α, β) is searched: a grid, then the batched L-BFGS with envelope-theorem gradients (the inner NNLS is at its
optimum, so d RSS/dα is the partial derivative at fixed E, A, B). The 2-D problem is far better conditioned than the
5-D one; both condition numbers are reported. NNLS in three variables is solved exactly by trying every support.
This is a different estimator from the log-Huber Approach 3: compare estimators only on the same objective.
"""
import itertools

import numpy as np

from analysis import diagnostics as diag
from analysis import lbfgs
from analysis import table as table_lib
from analysis.results import ParametricFit

DEFAULT_EXPONENT_GRID = np.linspace(0.02, 2.0, 45)
BOUNDS = (1e-4, 5.0)
MIN_POINTS = 6
_SUPPORTS = [s for r in (3, 2, 1) for s in itertools.combinations(range(3), r)]


def _features(x_Kx2, log_n, log_d):
  """[K, n, 3] columns (1, N^−α, D^−β)."""
  phi_n = np.exp(-x_Kx2[:, 0, None] * log_n)
  phi_d = np.exp(-x_Kx2[:, 1, None] * log_d)
  return np.stack([np.ones_like(phi_n), phi_n, phi_d], axis=-1)


def nnls3(phi_Kxnx3, y_n, w_Kxn):
  """Exact weighted NNLS with 3 coefficients for K problems: the best feasible least-squares fit over supports."""
  k = phi_Kxnx3.shape[0]
  wphi = phi_Kxnx3 * w_Kxn[..., None]
  gram = np.einsum("kni,knj->kij", wphi, phi_Kxnx3)
  rhs = np.einsum("kni,n->ki", wphi, y_n)
  scale = np.sqrt(np.maximum(np.einsum("kii->ki", gram), 1e-300))  # unit-diagonal Gram: better conditioned solves
  gram_s = gram / scale[:, :, None] / scale[:, None, :]
  rhs_s = rhs / scale
  best_c = np.zeros((k, 3))
  best_obj = np.zeros(k)  # the empty support: c = 0, objective offset 0 (RSS − Σ w y²)
  for support in _SUPPORTS:
    idx = np.array(support)
    g = gram_s[:, idx[:, None], idx[None, :]]
    c_s = np.linalg.solve(g + 1e-14 * np.eye(idx.size), rhs_s[:, idx][..., None])[..., 0]
    obj = -np.einsum("ki,ki->k", c_s, rhs_s[:, idx])  # RSS − Σ w y² at the LS solution of this support
    better = np.all(c_s >= 0, axis=1) & (obj < best_obj)
    c_full = np.zeros((k, 3))
    c_full[:, idx] = c_s / scale[:, idx]
    best_c[better], best_obj[better] = c_full[better], obj[better]
  return best_c


class VpObjective:
  """Batched RSS(α, β) with E, A, B projected out; `weights_Rxn` selects per-problem point weights."""

  def __init__(self, log_n, log_d, loss_n, weights_Rxn=None):
    self.log_n, self.log_d, self.loss_n = log_n, log_d, loss_n
    self.weights_Rxn = weights_Rxn

  def weights(self, rows_K, k):
    if self.weights_Rxn is None:
      return np.ones((k, self.loss_n.size))
    return self.weights_Rxn[rows_K]

  def solve(self, x_Kx2, rows_K=None):
    """(coefficients [K, 3] = E, A, B; residuals [K, n]; features; weights)."""
    x_Kx2 = np.asarray(x_Kx2, np.float64)
    phi = _features(x_Kx2, self.log_n, self.log_d)
    w = self.weights(rows_K, x_Kx2.shape[0])
    coef = nnls3(phi, self.loss_n, w)
    r = self.loss_n - np.einsum("kni,ki->kn", phi, coef)
    return coef, r, phi, w

  def __call__(self, x_Kx2, rows_K=None):
    coef, r, phi, w = self.solve(x_Kx2, rows_K)
    wr = w * r
    f = np.einsum("kn,kn->k", wr, r)
    # Envelope theorem: d/dα of Σ w r² at fixed (E, A, B) = 2 Σ w r · A N^−α log N.
    g_alpha = 2 * coef[:, 1] * np.einsum("kn,kn,n->k", wr, phi[..., 1], self.log_n)
    g_beta = 2 * coef[:, 2] * np.einsum("kn,kn,n->k", wr, phi[..., 2], self.log_d)
    return f, np.stack([g_alpha, g_beta], axis=1)


def make_objective(table: table_lib.RunTable, weights_Rxn=None) -> VpObjective:
  table_lib.require_columns(table, ("params", "tokens", "loss"), "VPNLS")
  return VpObjective(np.log(table.column("params")), np.log(table.column("tokens")), table.column("loss"), weights_Rxn)


def grid_search(obj: VpObjective, grid_alpha, grid_beta):
  """Best (α, β) on the product grid, and whether it sits on the grid's edge."""
  ga, gb = np.meshgrid(grid_alpha, grid_beta, indexing="ij")
  pts = np.stack([ga.ravel(), gb.ravel()], 1)
  f, _ = obj(pts)
  i = int(np.nanargmin(f))
  ia, ib = np.unravel_index(i, ga.shape)
  edge = [name for name, j, size in (("alpha", ia, ga.shape[0]), ("beta", ib, ga.shape[1])) if j in (0, size - 1)]
  return pts[i], edge


def fit_vpnls(data, *, grid_alpha=DEFAULT_EXPONENT_GRID, grid_beta=DEFAULT_EXPONENT_GRID, ftol: float = 1e-13,
              gtol: float = 1e-12, max_iter: int = 1000) -> ParametricFit:
  from analysis.parametric import as_table, table_warnings
  table = as_table(data)
  table_lib.require_rows(table, MIN_POINTS, "VPNLS (5 parameters)")
  obj = make_objective(table)
  start, edge = grid_search(obj, np.asarray(grid_alpha, float), np.asarray(grid_beta, float))
  res = lbfgs.minimize(obj, start[None], [BOUNDS[0]] * 2, [BOUNDS[1]] * 2, ftol=ftol, gtol=gtol, max_iter=max_iter)
  x = res.x[0]
  coef, r, _, _ = obj.solve(x[None])
  E, A, B = (float(v) for v in coef[0])
  status = lbfgs.STATUS_NAMES[int(res.status[0])]
  if res.status[0] == lbfgs.STALLED and np.max(np.abs(r)) < 1e-9 * np.max(np.abs(obj.loss_n)):
    status = "converged_zero_residual"
  flags = diag.parameter_flags(["alpha", "beta"], x, start, [BOUNDS[0]] * 2, [BOUNDS[1]] * 2)
  flags["at_grid_edge"] = edge
  flags["on_bound"] += [name for name, v in (("E", E), ("A", A), ("B", B)) if v == 0.0]  # NNLS bound at 0
  warnings = diag.warnings_for(flags, status) + table_warnings(table)
  estimator = {"form": "L = E + A N^-alpha + B D^-beta", "loss": "squared", "space": "linear", "reduction": "sum",
               "optimiser": "grid over (alpha, beta) + batched L-BFGS; E, A, B by exact NNLS",
               "grid_alpha": [float(np.min(grid_alpha)), float(np.max(grid_alpha)), int(np.size(grid_alpha))],
               "grid_beta": [float(np.min(grid_beta)), float(np.max(grid_beta)), int(np.size(grid_beta))]}
  diagnostics = {"status": status, "grid_best": start.tolist(), **flags,
                 "condition_number_2d": _hessian_condition(obj, x), "condition_number_5d": _condition_5d(obj, x, coef[0]),
                 "residuals": diag.residual_summary(r[0]), "warnings": warnings}
  return ParametricFit(method="vpnls", E=E, A=A, B=B, alpha=float(x[0]), beta=float(x[1]),
                       objective=float(res.f[0]), estimator=estimator, diagnostics=diagnostics,
                       input=table.provenance())


def _hessian_condition(obj: VpObjective, x, h: float = 1e-5) -> float:
  """Condition number of the finite-difference Hessian of the projected objective in (α, β)."""
  pts = [x + h * np.array(d) for d in ((1, 0), (-1, 0), (0, 1), (0, -1))]
  g = obj(np.array(pts))[1]
  hess = np.array([(g[0] - g[1]) / (2 * h), (g[2] - g[3]) / (2 * h)])
  ev = np.abs(np.linalg.eigvalsh(0.5 * (hess + hess.T)))
  return float(ev.max() / ev.min()) if ev.min() > 0 else float("inf")


def _condition_5d(obj: VpObjective, x, coef) -> float:
  """cond(JᵀJ) of the 5-D linear-space residual Jacobian in (E, A, B, α, β), for comparison."""
  phi_n, phi_d = np.exp(-x[0] * obj.log_n), np.exp(-x[1] * obj.log_d)
  jac = np.stack([np.ones_like(phi_n), phi_n, phi_d, -coef[1] * phi_n * obj.log_n, -coef[2] * phi_d * obj.log_d], 1)
  return diag.condition_number(jac)
