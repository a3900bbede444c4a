"""Batched box-constrained L-BFGS in numpy: many independent small problems advanced in lock-step.

A multi-start fit (4,500 starts of a 5-parameter law) or a bootstrap (4,000 resamples) is thousands of tiny
problems. Looping `scipy.optimize.minimize` over them spends its time in Python overhead; here every iteration
evaluates the objective for all unfinished problems in one vectorised call, and finished problems leave the batch.

Each problem keeps its own memory, step and line search (projected L-BFGS: variables pinned at a bound with the
gradient pointing outwards are frozen for the step, the path is projected onto the box, Armijo backtracking with
safeguarded quadratic interpolation). Stopping rules are relative to the objective's own size, so multiplying the
objective by a constant changes nothing (METHOD.md §5.9 pitfall 1: an absolute tolerance stops a mean-Huber fit
almost at once).
"""
import dataclasses
from typing import Callable

import numpy as np

# Per-problem status codes.
CONVERGED_GRAD, CONVERGED_F, STALLED, MAX_ITER = 0, 1, 2, 3
STATUS_NAMES = {CONVERGED_GRAD: "converged_gradient", CONVERGED_F: "converged_objective",
                STALLED: "stalled_line_search", MAX_ITER: "max_iter"}

# fun(x_KxP, rows_K) -> (f_K, g_KxP); rows_K says which problems the K points belong to (their data/weights).
BatchedFun = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclasses.dataclass
class BatchResult:
  x: np.ndarray          # [S, P] final points
  f: np.ndarray          # [S] final objectives
  grad: np.ndarray       # [S, P] final gradients
  status: np.ndarray     # [S] status codes (see STATUS_NAMES)
  n_iter: np.ndarray     # [S] iterations taken
  n_eval: int            # objective evaluations summed over problems

  def status_counts(self) -> dict[str, int]:
    codes, counts = np.unique(self.status, return_counts=True)
    return {STATUS_NAMES[int(c)]: int(n) for c, n in zip(codes, counts)}


def projected_gradient(x_KxP, g_KxP, lower_P, upper_P):
  """The gradient with components zeroed where a bound blocks descent; its size measures stationarity.

  Written as a mask rather than x − P(x − g), which cancels to 0 when g is tiny next to x (a scaled-down
  objective would then look converged at once).
  """
  return np.where(_pinned(x_KxP, g_KxP, lower_P, upper_P), 0.0, g_KxP)


def _pinned(x, g, lower, upper):
  return ((x <= lower) & (g > 0)) | ((x >= upper) & (g < 0))


def _two_loop(g_KxP, s_MxKxP, y_MxKxP, rho_MxK, order):
  """L-BFGS direction −H·g for every problem. Memory slots are listed newest first in `order`; a slot with
  rho = 0 is empty for that problem and contributes nothing."""
  q = g_KxP.copy()
  alphas = []
  for slot in order:  # newest to oldest
    a = rho_MxK[slot] * np.einsum("kp,kp->k", s_MxKxP[slot], q)
    q -= a[:, None] * y_MxKxP[slot]
    alphas.append(a)
  gamma = np.ones(q.shape[0])
  if order:  # initial Hessian scale s·y / y·y of the newest pair (= 1 / (rho·y·y)): makes the step scale-free
    ryy = rho_MxK[order[0]] * np.einsum("kp,kp->k", y_MxKxP[order[0]], y_MxKxP[order[0]])
    gamma = np.divide(1.0, ryy, out=gamma, where=ryy > 0)
  r = gamma[:, None] * q
  for slot, a in zip(reversed(order), reversed(alphas)):  # oldest to newest
    b = rho_MxK[slot] * np.einsum("kp,kp->k", y_MxKxP[slot], r)
    r += (a - b)[:, None] * s_MxKxP[slot]
  return -r


def minimize(fun: BatchedFun, x0_SxP, lower=None, upper=None, *, memory: int = 10, max_iter: int = 2000,
             ftol: float = 1e-11, gtol: float = 1e-10, max_trials: int = 40, c1: float = 1e-4) -> BatchResult:
  """Minimise S independent problems from x0_SxP inside the box [lower, upper] (each [P] or None = unbounded).

  Stops a problem when max|projected gradient| <= gtol * |f| (CONVERGED_GRAD), when one iteration lowers f by
  <= ftol * |f| (CONVERGED_F), when neither the quasi-Newton nor the steepest-descent search can lower f
  (STALLED: the floating-point floor), or at max_iter (MAX_ITER). Both tolerances are relative, hence invariant
  to scaling the objective.

  Unfinished problems live in compact working arrays (finished ones are written out and dropped), and all share
  one circular memory pointer: a problem that skips an update gets an empty (rho = 0) slot instead of a shift.
  """
  x = np.array(x0_SxP, dtype=np.float64, copy=True)
  n_prob, n_par = x.shape
  lower = np.full(n_par, -np.inf) if lower is None else np.asarray(lower, np.float64)
  upper = np.full(n_par, np.inf) if upper is None else np.asarray(upper, np.float64)
  x = np.clip(x, lower, upper)
  f, g = fun(x, np.arange(n_prob))
  f, g = np.array(f, np.float64), np.array(g, np.float64)
  n_eval = n_prob
  status = np.full(n_prob, MAX_ITER)
  n_iter = np.zeros(n_prob, dtype=np.int64)
  finite = np.isfinite(f)
  status[~finite] = STALLED  # a start where the objective is not finite cannot move
  # Working set: rows of the unfinished problems only.
  w = {"idx": np.flatnonzero(finite)}
  w.update(x=x[w["idx"]], f=f[w["idx"]], g=g[w["idx"]], it=np.zeros(w["idx"].size, np.int64),
           s=np.zeros((memory, w["idx"].size, n_par)), y=np.zeros((memory, w["idx"].size, n_par)),
           rho=np.zeros((memory, w["idx"].size)))
  head, filled = 0, 0

  def finish(mask, code):
    """Write the masked working rows out with status `code` and drop them from the working set."""
    rows = w["idx"][mask]
    x[rows], f[rows], g[rows], n_iter[rows], status[rows] = w["x"][mask], w["f"][mask], w["g"][mask], w["it"][mask], code
    keep = ~mask
    for key in ("idx", "x", "f", "g", "it"):
      w[key] = w[key][keep]
    for key in ("s", "y", "rho"):
      w[key] = w[key][:, keep]

  for _ in range(max_iter):
    if w["idx"].size == 0:
      break
    done = np.max(np.abs(projected_gradient(w["x"], w["g"], lower, upper)), axis=1) <= gtol * np.abs(w["f"])
    if done.any():
      finish(done, CONVERGED_GRAD)
      if w["idx"].size == 0:
        break
    xa, fa, ga = w["x"], w["f"], w["g"]
    # Freeze variables held at a bound by the gradient; search in the others.
    pinned = _pinned(xa, ga, lower, upper)
    g_free = np.where(pinned, 0.0, ga)
    order = [(head - i) % memory for i in range(filled)]
    d = _two_loop(g_free, w["s"], w["y"], w["rho"], order)
    d[pinned] = 0.0
    has_mem = np.any(w["rho"] != 0, axis=0)
    bad = ~(np.einsum("kp,kp->k", ga, d) < 0) | ~has_mem
    if bad.any():  # steepest descent, scaled to a unit step, when memory is empty or gives no descent
      gn = np.linalg.norm(g_free[bad], axis=1)
      d[bad] = -g_free[bad] / np.where(gn > 0, gn, 1.0)[:, None]
      w["rho"][:, bad] = 0.0
      has_mem &= ~bad
    x_new, f_new, g_new, ok, evals = _line_search(fun, w["idx"], xa, fa, ga, d, lower, upper, max_trials, c1)
    n_eval += evals
    w["it"] += 1
    # New curvature pair in the oldest slot; problems that did not move (or whose s, y are orthogonal) get an
    # empty slot there.
    s_vec, y_vec = x_new - xa, g_new - ga
    sy = np.einsum("kp,kp->k", s_vec, y_vec)
    scale = np.sqrt(np.einsum("kp,kp->k", s_vec, s_vec) * np.einsum("kp,kp->k", y_vec, y_vec))
    upd = ok & (sy > 1e-10 * scale) & (scale > 0)
    head, filled = (head + 1) % memory, min(filled + 1, memory)
    w["s"][head], w["y"][head] = np.where(upd[:, None], s_vec, 0.0), np.where(upd[:, None], y_vec, 0.0)
    w["rho"][head] = np.divide(1.0, sy, out=np.zeros_like(sy), where=upd)
    # A failed search from a quasi-Newton direction gets one retry along steepest descent; from that, it stalls.
    retry = ~ok & has_mem
    w["rho"][:, retry] = 0.0
    small_step = ok & (fa - f_new <= ftol * np.abs(fa))
    w["x"], w["f"], w["g"] = np.where(ok[:, None], x_new, xa), np.where(ok, f_new, fa), np.where(ok[:, None], g_new, ga)
    if small_step.any():
      finish(small_step, CONVERGED_F)
      retry, ok = retry[~small_step], ok[~small_step]
    stalled = ~ok & ~retry
    if stalled.any():
      finish(stalled, STALLED)
  if w["idx"].size:
    finish(np.ones(w["idx"].size, bool), MAX_ITER)
  return BatchResult(x=x, f=f, grad=g, status=status, n_iter=n_iter, n_eval=n_eval)


def _line_search(fun, rows, x, f, g, d, lower, upper, max_trials, c1, c2=0.9):
  """Weak-Wolfe bracketing along the projected path x(t) = P(x + t d), all problems at once.

  Armijo failure shrinks the bracket (safeguarded quadratic interpolation); a step that is still descending steeply
  (curvature condition failing) grows t, which is what lets a start escape a flat plateau where the gradient is tiny.
  After max_trials the best Armijo point found is kept; a problem with none is STALLED. The problems still
  searching are kept in compact arrays (`s_*`), so each trial touches only them.
  """
  k = rows.size
  x_new, f_new, g_new = x.copy(), f.copy(), g.copy()
  ok = np.zeros(k, dtype=bool)
  todo = np.arange(k)
  s_x, s_f, s_g, s_d, s_rows = x, f, g, d, rows
  s_slope = np.einsum("kp,kp->k", g, d)
  s_t, s_lo, s_hi = np.ones(k), np.zeros(k), np.full(k, np.inf)
  evals = 0
  for _ in range(max_trials):
    xt = np.clip(s_x + s_t[:, None] * s_d, lower, upper)
    ft, gt = fun(xt, s_rows)
    evals += todo.size
    step = xt - s_x
    predicted = np.einsum("kp,kp->k", s_g, step)  # first-order change along the projected path
    armijo = np.isfinite(ft) & (ft <= s_f + c1 * predicted) & (ft < s_f)
    better = armijo & (~ok[todo] | (ft < f_new[todo]))
    upd = todo[better]
    x_new[upd], f_new[upd], g_new[upd], ok[upd] = xt[better], ft[better], gt[better], True
    grow = armijo & (np.einsum("kp,kp->k", gt, s_d) < c2 * s_slope) & np.any(step != 0, axis=1)
    if grow.any():  # a path flattened by the bounds cannot go further
      i = np.flatnonzero(grow)
      farther = np.clip(s_x[i] + 2 * s_t[i, None] * s_d[i], lower, upper)
      grow[i] = np.any(farther != xt[i], axis=1)
    shrink = ~armijo
    s_lo = np.where(grow, s_t, s_lo)
    s_hi = np.where(shrink, s_t, s_hi)
    # Quadratic model of f along the path from f(0), f'(0)·t and f(t); clipped inside the bracket.
    denom = 2.0 * (ft - s_f - predicted)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
      t_quad = np.where(np.isfinite(ft) & (denom > 0), -predicted * s_t / denom, 0.1 * s_t)
      t_shrunk = np.clip(t_quad, s_lo + 0.1 * (s_hi - s_lo), s_lo + 0.5 * (s_hi - s_lo))
      t_grown = np.where(np.isinf(s_hi), 4.0 * s_t, 0.5 * (s_t + s_hi))
    s_t = np.where(shrink, t_shrunk, np.where(grow, t_grown, s_t))
    cont = grow | shrink
    if not cont.any():
      break
    if not cont.all():
      todo, s_x, s_f, s_g, s_d, s_rows = todo[cont], s_x[cont], s_f[cont], s_g[cont], s_d[cont], s_rows[cont]
      s_slope, s_t, s_lo, s_hi = s_slope[cont], s_t[cont], s_lo[cont], s_hi[cont]
  return x_new, f_new, g_new, ok, evals
