"""The Approach-3 objective: log-space LSE form of L = E + A/N^α + B/D^β with Huber or squared loss, batched.

    log L̂ = LSE(a − α·log N, b − β·log D, e),   A = e^a, B = e^b, E = e^e       (METHOD.md §5.2)
    objective = Σ_i w_i·ρ(log L_i − log L̂_i),  ρ = Huber_δ (scipy.special.huber) or ½r² ("mse")

Summed, never averaged (§5.9 pitfall 1). Parameters are ordered PARAM_NAMES; the gradient is analytic. Evaluating
K parameter vectors at once (a start grid or a bootstrap batch) is the point of the [K, n] layout.
"""
import concurrent.futures
import dataclasses
import os

import numpy as np

PARAM_NAMES = ("a", "b", "e", "alpha", "beta")
LOSSES = ("huber", "mse")
_POOLS: dict[int, concurrent.futures.ThreadPoolExecutor] = {}


def default_threads() -> int:
  """Worker threads for large batches: MDM_LAB_FIT_THREADS, else the CPU count (numpy ufuncs release the GIL)."""
  return max(1, int(os.environ.get("MDM_LAB_FIT_THREADS", 0)) or min(8, os.cpu_count() or 1))


def _pool(n: int) -> concurrent.futures.ThreadPoolExecutor:
  if n not in _POOLS:
    _POOLS[n] = concurrent.futures.ThreadPoolExecutor(max_workers=n, thread_name_prefix="analysis-fit")
  return _POOLS[n]


def log_prediction(x_KxP, log_n, log_d):
  """log L̂ [K, n] for K parameter vectors (reference form with the max trick; the objective uses a faster one)."""
  a, b, e, alpha, beta = (x_KxP[:, i, None] for i in range(5))
  return np.logaddexp(np.logaddexp(a - alpha * log_n, b - beta * log_d), e)


@dataclasses.dataclass
class LseObjective:
  """Batched objective over one data set; `weights_Rxn` (optional) gives per-problem point weights (bootstrap)."""
  log_n: np.ndarray
  log_d: np.ndarray
  log_loss: np.ndarray
  loss: str = "huber"
  delta: float = 1e-3
  scale: float = 1.0          # multiply the objective (tests of scale invariance)
  weights_Rxn: np.ndarray | None = None
  threads: int | None = None  # None: default_threads(); blocks are independent, so results do not depend on it

  def __post_init__(self):
    # [n, 2] matrices (1, log v): each term's two gradient reductions become one matrix product.
    self._ones_log_n = np.stack([np.ones_like(self.log_n), self.log_n], axis=1)
    self._ones_log_d = np.stack([np.ones_like(self.log_d), self.log_d], axis=1)

  def residuals(self, x_KxP):
    """r = log L − log L̂, [K, n]."""
    return self.log_loss - log_prediction(np.atleast_2d(x_KxP), self.log_n, self.log_d)

  def __call__(self, x_KxP, rows_K=None):
    x_KxP = np.asarray(x_KxP, np.float64)
    k = x_KxP.shape[0]
    f_K, g_KxP = np.empty(k), np.empty((k, 5))
    # Rows per block: ~24k elements keep the half-dozen [chunk, n] temporaries in a 512 KiB L2 (measured: 2x
    # faster than 64k-element blocks on Zen 3, and 4x faster than whole-batch arrays).
    chunk = max(1, 24576 // max(1, self.log_n.size))
    starts = range(0, k, chunk)

    def run(lo):
      rows = None if self.weights_Rxn is None else rows_K[lo:lo + chunk]
      f_K[lo:lo + chunk], g_KxP[lo:lo + chunk] = self._block(x_KxP[lo:lo + chunk], rows)
    threads = self.threads or default_threads()
    if threads > 1 and len(starts) >= 2 * threads:
      list(_pool(threads).map(run, starts))
    else:
      for lo in starts:
        run(lo)
    return self.scale * f_K, self.scale * g_KxP

  def _block(self, x, rows):
    # Linear space: L̂ = A·N^−α + B·D^−β + E = u1 + u2 + E. Two exps and one log per point instead of the
    # four of a max-shifted LSE; an overflow at a wild trial point gives inf, which the line search rejects.
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
      u1 = np.multiply.outer(-x[:, 3], self.log_n)
      u1 += x[:, 0, None]
      np.exp(u1, out=u1)
      u2 = np.multiply.outer(-x[:, 4], self.log_d)
      u2 += x[:, 1, None]
      np.exp(u2, out=u2)
      big_e = np.exp(x[:, 2])
      total = np.add(u1, u2)
      total += big_e[:, None]
      r = np.log(total)
      np.subtract(self.log_loss, r, out=r)
      # Huber via c = clip(r, ±δ): ρ = c·(r − c/2) and dρ/dr = c; MSE is the same with δ = ∞.
      delta = np.inf if self.loss == "mse" else self.delta
      c = np.clip(r, -delta, delta)
      r -= 0.5 * c
      r *= c
      if rows is None:
        f = r.sum(1)
      else:
        w = self.weights_Rxn[rows]
        f = np.einsum("kn,kn->k", r, w)
        c *= w
      c /= total                      # dρ/d(log L̂) · d(log L̂)/dL̂, up to sign
      g = np.empty((x.shape[0], 5))
      g[:, 2] = -big_e * c.sum(1)
      u1 *= c
      u2 *= c
      sums_n, sums_d = u1 @ self._ones_log_n, u2 @ self._ones_log_d  # [Σ, Σ·log] per term
      g[:, 0], g[:, 3], g[:, 1], g[:, 4] = -sums_n[:, 0], sums_n[:, 1], -sums_d[:, 0], sums_d[:, 1]
    return f, g


def to_natural(x_P) -> dict[str, float]:
  """(a, b, e, α, β) -> {E, A, B, alpha, beta} as plain floats, unrounded."""
  a, b, e, alpha, beta = (float(v) for v in x_P)
  return {"E": float(np.exp(e)), "A": float(np.exp(a)), "B": float(np.exp(b)), "alpha": alpha, "beta": beta}


def loss_surface(params: dict, n, d):
  """L(N, D) = E + A/N^α + B/D^β in linear space (the form every allocation formula uses)."""
  n, d = np.asarray(n, np.float64), np.asarray(d, np.float64)
  return params["E"] + params["A"] * n ** -params["alpha"] + params["B"] * d ** -params["beta"]
