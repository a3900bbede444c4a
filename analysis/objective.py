"""The Approach-3 objective: log-space LSE form of L = E + A/N^α + B/D^β with Huber or squared loss, batched.

    log L̂ = LSE(a − α·log N, b − β·log D, e),   A = e^a, B = e^b, E = e^e       (METHOD.md §5.2)
    objective = Σ_i w_i·ρ(log L_i − log L̂_i),  ρ = Huber_δ (scipy.special.huber) or ½r² ("mse")

Summed, never averaged (§5.9 pitfall 1). Parameters are ordered PARAM_NAMES; the gradient is analytic. Evaluating
K parameter vectors at once (a start grid or a bootstrap batch) is the point of the [K, n] layout.
"""
import dataclasses

import numpy as np

PARAM_NAMES = ("a", "b", "e", "alpha", "beta")
LOSSES = ("huber", "mse")


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

  def residuals(self, x_KxP):
    """r = log L − log L̂, [K, n]."""
    return self.log_loss - log_prediction(np.atleast_2d(x_KxP), self.log_n, self.log_d)

  def __call__(self, x_KxP, rows_K=None):
    x_KxP = np.asarray(x_KxP, np.float64)
    k = x_KxP.shape[0]
    f_K, g_KxP = np.empty(k), np.empty((k, 5))
    chunk = max(1, 2**18 // max(1, self.log_n.size))  # rows per block: keeps the [chunk, n] temporaries in cache
    for lo in range(0, k, chunk):
      rows = None if self.weights_Rxn is None else rows_K[lo:lo + chunk]
      f_K[lo:lo + chunk], g_KxP[lo:lo + chunk] = self._block(x_KxP[lo:lo + chunk], rows)
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
      total = u1 + u2
      total += big_e[:, None]
      r = np.log(total)
      np.subtract(self.log_loss, r, out=r)
      # Huber via c = clip(r, ±δ): ρ = c·(r − c/2) and dρ/dr = c; MSE is the same with δ = ∞.
      delta = np.inf if self.loss == "mse" else self.delta
      c = np.clip(r, -delta, delta)
      r -= 0.5 * c
      r *= c
      if rows is not None:
        w = self.weights_Rxn[rows]
        r *= w
        c *= w
      f = r.sum(1)
      c /= total                      # dρ/d(log L̂) · d(log L̂)/dL̂ up to sign
      u1 *= c
      u2 *= c
      g = np.stack([-u1.sum(1), -u2.sum(1), -big_e * c.sum(1), u1 @ self.log_n, u2 @ self.log_d], axis=1)
    return f, g


def to_natural(x_P) -> dict[str, float]:
  """(a, b, e, α, β) -> {E, A, B, alpha, beta} as plain floats, unrounded."""
  a, b, e, alpha, beta = (float(v) for v in x_P)
  return {"E": float(np.exp(e)), "A": float(np.exp(a)), "B": float(np.exp(b)), "alpha": alpha, "beta": beta}


def loss_surface(params: dict, n, d):
  """L(N, D) = E + A/N^α + B/D^β in linear space (the form every allocation formula uses)."""
  n, d = np.asarray(n, np.float64), np.asarray(d, np.float64)
  return params["E"] + params["A"] * n ** -params["alpha"] + params["B"] * d ** -params["beta"]
