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


def _two_loop(g_KxP, s_KxMxP, y_KxMxP, rho_KxM, n_mem_K):
  """L-BFGS direction -H g for every problem; memory slot 0 is the newest, empty slots have rho = 0."""
  q = g_KxP.copy()
  m = s_KxMxP.shape[1]
  alpha_KxM = np.zeros(rho_KxM.shape)
  for i in range(m):  # newest to oldest
    alpha_KxM[:, i] = rho_KxM[:, i] * np.einsum("kp,kp->k", s_KxMxP[:, i], q)
    q -= alpha_KxM[:, i, None] * y_KxMxP[:, i]
  # Initial Hessian scale s·y / y·y from the newest pair (= 1 / (rho·y·y)); this makes the step scale-free.
  ryy = rho_KxM[:, 0] * np.einsum("kp,kp->k", y_KxMxP[:, 0], y_KxMxP[:, 0])
  gamma = np.divide(1.0, ryy, out=np.ones_like(ryy), where=(n_mem_K > 0) & (ryy > 0))
  r = gamma[:, None] * q
  for i in reversed(range(m)):  # oldest to newest
    beta = rho_KxM[:, i] * np.einsum("kp,kp->k", y_KxMxP[:, i], r)
    r += (alpha_KxM[:, i] - beta)[:, None] * s_KxMxP[:, i]
  return -r


def minimize(fun: BatchedFun, x0_SxP, lower=None, upper=None, *, memory: int = 10, max_iter: int = 2000,
             ftol: float = 1e-11, gtol: float = 1e-10, max_trials: int = 40, c1: float = 1e-4) -> BatchResult:
  """Minimise S independent problems from x0_SxP inside the box [lower, upper] (each [P] or None = unbounded).

  Stops a problem when max|projected gradient| <= gtol * |f| (CONVERGED_GRAD), when one iteration lowers f by
  <= ftol * |f| (CONVERGED_F), when backtracking cannot lower f at all (STALLED: the floating-point floor), or at
  max_iter (MAX_ITER). Both tolerances are relative, hence invariant to scaling the objective.
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
  s_mem = np.zeros((n_prob, memory, n_par))
  y_mem = np.zeros((n_prob, memory, n_par))
  rho = np.zeros((n_prob, memory))
  n_mem = np.zeros(n_prob, dtype=np.int64)
  active = np.flatnonzero(np.isfinite(f))
  status[~np.isfinite(f)] = STALLED  # a start where the objective is not finite cannot move

  for _ in range(max_iter):
    if active.size == 0:
      break
    xa, fa, ga = x[active], f[active], g[active]
    pg = projected_gradient(xa, ga, lower, upper)
    done = np.max(np.abs(pg), axis=1) <= gtol * np.abs(fa)
    status[active[done]] = CONVERGED_GRAD
    keep = ~done
    active, xa, fa, ga = active[keep], xa[keep], fa[keep], ga[keep]
    if active.size == 0:
      break
    # Freeze variables held at a bound by the gradient; search in the others.
    pinned = _pinned(xa, ga, lower, upper)
    g_free = np.where(pinned, 0.0, ga)
    d = _two_loop(g_free, s_mem[active], y_mem[active], rho[active], n_mem[active])
    d[pinned] = 0.0
    slope = np.einsum("kp,kp->k", ga, d)
    bad = ~(slope < 0) | (n_mem[active] == 0)
    if bad.any():  # steepest descent, scaled to a unit step, when memory is empty or gives no descent
      gn = np.linalg.norm(g_free[bad], axis=1)
      d[bad] = -g_free[bad] / np.where(gn > 0, gn, 1.0)[:, None]
      n_mem[active[bad]] = 0
      rho[active[bad]] = 0.0
    x_new, f_new, g_new, ok, evals = _line_search(fun, active, xa, fa, ga, d, lower, upper, max_trials, c1)
    n_eval += evals
    n_iter[active] += 1
    # A failed search from a quasi-Newton direction gets one retry along steepest descent; from that, it stalls.
    failed = ~ok
    retry = failed & (n_mem[active] > 0)
    n_mem[active[retry]] = 0
    rho[active[retry]] = 0.0
    status[active[failed & ~retry]] = STALLED
    # Update memory for the problems that moved.
    s_vec, y_vec = x_new - xa, g_new - ga
    sy = np.einsum("kp,kp->k", s_vec, y_vec)
    yy = np.einsum("kp,kp->k", y_vec, y_vec)
    ss = np.einsum("kp,kp->k", s_vec, s_vec)
    upd = ok & (sy > 1e-10 * np.sqrt(ss * yy)) & (yy > 0)  # curvature pair kept if s, y are not orthogonal
    idx = active[upd]
    s_mem[idx] = np.roll(s_mem[idx], 1, axis=1)
    y_mem[idx] = np.roll(y_mem[idx], 1, axis=1)
    rho[idx] = np.roll(rho[idx], 1, axis=1)
    s_mem[idx, 0], y_mem[idx, 0], rho[idx, 0] = s_vec[upd], y_vec[upd], 1.0 / sy[upd]
    n_mem[idx] = np.minimum(n_mem[idx] + 1, memory)
    small_step = ok & (fa - f_new <= ftol * np.abs(fa))
    x[active[ok]], f[active[ok]], g[active[ok]] = x_new[ok], f_new[ok], g_new[ok]
    status[active[small_step]] = CONVERGED_F
    active = active[(ok & ~small_step) | retry]
  return BatchResult(x=x, f=f, grad=g, status=status, n_iter=n_iter, n_eval=n_eval)


def _line_search(fun, rows, x, f, g, d, lower, upper, max_trials, c1, c2=0.9):
  """Weak-Wolfe bracketing along the projected path x(t) = P(x + t d), all problems at once.

  Armijo failure shrinks the bracket (safeguarded quadratic interpolation); a step that is still descending steeply
  (curvature condition failing) grows t, which is what lets a start escape a flat plateau where the gradient is tiny.
  After max_trials the best Armijo point found is kept; a problem with none is STALLED.
  """
  k = rows.size
  t, lo, hi = np.ones(k), np.zeros(k), np.full(k, np.inf)
  x_new, f_new, g_new = x.copy(), f.copy(), g.copy()
  ok = np.zeros(k, dtype=bool)
  slope0 = np.einsum("kp,kp->k", g, d)
  todo = np.arange(k)
  evals = 0
  for _ in range(max_trials):
    xt = np.clip(x[todo] + t[todo, None] * d[todo], lower, upper)
    ft, gt = fun(xt, rows[todo])
    evals += todo.size
    step = xt - x[todo]
    predicted = np.einsum("kp,kp->k", g[todo], step)  # first-order change along the projected path
    armijo = np.isfinite(ft) & (ft <= f[todo] + c1 * predicted) & (ft < f[todo])
    better = armijo & (~ok[todo] | (ft < f_new[todo]))
    upd = todo[better]
    x_new[upd], f_new[upd], g_new[upd], ok[upd] = xt[better], ft[better], gt[better], True
    steep = armijo & (np.einsum("kp,kp->k", gt, d[todo]) < c2 * slope0[todo]) & np.any(step != 0, axis=1)
    moving = np.any(xt != np.clip(x[todo] + 2 * t[todo, None] * d[todo], lower, upper), axis=1)
    grow = steep & moving  # a path flattened by the bounds cannot go further
    shrink = ~armijo
    tt = t[todo]
    lo[todo[grow]] = tt[grow]
    hi[todo[shrink]] = tt[shrink]
    # Quadratic model of f along the path from f(0), f'(0)·t and f(t); clipped inside the bracket.
    denom = 2.0 * (ft - f[todo] - predicted)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
      t_quad = np.where(np.isfinite(ft) & (denom > 0), -predicted * tt / denom, 0.1 * tt)
    lo_s, hi_s = lo[todo[shrink]], hi[todo[shrink]]
    t[todo[shrink]] = np.clip(t_quad[shrink], lo_s + 0.1 * (hi_s - lo_s), lo_s + 0.5 * (hi_s - lo_s))
    hi_g = hi[todo[grow]]
    t[todo[grow]] = np.where(np.isinf(hi_g), 4.0 * tt[grow], 0.5 * (tt[grow] + hi_g))
    todo = todo[grow | shrink]
    if todo.size == 0:
      break
  return x_new, f_new, g_new, ok, evals
