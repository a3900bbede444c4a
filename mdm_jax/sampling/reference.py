"""The reference model for generative perplexity: an interpolated Kneser-Ney n-gram over the run's training text.

Why an n-gram and not a neural model: it is fitted by the lab on the run's own training split (no leakage of
held-out text, no outside weights), it gives an exact likelihood rather than a noisy bound (an MDM's ELBO would add
Monte Carlo noise and score a model by itself), it takes a second to fit, and it is deterministic. It only judges
local (order-n) fluency, so a repetitive sample can score well: read gen-PPL next to token entropy, and next to the
same reference's perplexity on real held-out text (`perplexity` of the validation rows).

Ids: text ids [0, text_size) and [EOS] (mapped to text_size); other ids never occur in text rows.
Interpolated KN with one discount D per order (Chen & Goodman 1998, eq. 17; lower orders use continuation counts):
  p_k(w | h) = max(c_k(h w) − D, 0) / c_k(h •) + D · N1+(h •) / c_k(h •) · p_{k−1}(w | h'),  h' = h minus its first id
  (c_n = raw counts; c_k = number of distinct left extensions for k < n; a history never seen backs off fully),
  p_0(w) = 1 / V.
"""
import numpy as np


class KneserNey:
  """fit(token stream) then log_probs(ids) for every position of each sequence given its own left context."""

  def __init__(self, vocab_size: int, order: int = 3, discount: float = 0.75):
    if order < 1 or not 0 < discount < 1:
      raise ValueError("order must be >= 1 and the discount in (0, 1)")
    self.v, self.order, self.d = int(vocab_size), order, discount
    if self.v ** order >= 2 ** 62:
      raise ValueError(f"vocab {vocab_size} ** order {order} does not fit int64 n-gram keys")
    self.tables: list[tuple] = []   # per order k = 1..n: (gram keys, counts, history keys, history totals, types)

  def _grams(self, ids: np.ndarray, k: int) -> np.ndarray:
    keys = np.zeros(len(ids) - k + 1, np.int64)
    for i in range(k):
      keys = keys * self.v + ids[i:len(ids) - k + 1 + i]
    return keys

  def fit(self, ids) -> "KneserNey":
    ids = np.asarray(ids, np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= self.v):
      raise ValueError(f"ids must lie in [0, {self.v})")
    self.tables = []
    for k in range(1, self.order + 1):
      if k == self.order:
        keys, counts = np.unique(self._grams(ids, k), return_counts=True)
      else:   # continuation count: distinct ids seen before the k-gram
        longer = np.unique(self._grams(ids, k + 1))
        keys, counts = np.unique(longer % self.v ** k, return_counts=True)
      hist, inverse = np.unique(keys // self.v, return_inverse=True)
      totals = np.bincount(inverse, weights=counts, minlength=len(hist))
      types = np.bincount(inverse, minlength=len(hist))
      self.tables.append((keys, counts.astype(np.float64), hist, totals, types.astype(np.float64)))
    return self

  @staticmethod
  def _lookup(sorted_keys, values, queries, default=0.0):
    i = np.minimum(np.searchsorted(sorted_keys, queries), max(len(sorted_keys) - 1, 0))
    hit = (sorted_keys[i] == queries) if len(sorted_keys) else np.zeros(len(queries), bool)
    return np.where(hit, values[i] if len(values) else default, default)

  def log_probs(self, ids) -> np.ndarray:
    """ln p(ids[t] | ids[max(0, t−n+1):t]) for every t of one sequence."""
    ids = np.asarray(ids, np.int64)
    p = np.full(len(ids), 1.0 / self.v)
    for k, (keys, counts, hist, totals, types) in enumerate(self.tables, start=1):
      t = np.arange(k - 1, len(ids))   # positions with a full (k−1)-token history
      if not len(t):
        break
      h = np.zeros(len(t), np.int64)
      for i in range(k - 1, 0, -1):
        h = h * self.v + ids[t - i]
      total = self._lookup(hist, totals, h)
      seen = total > 0
      c = self._lookup(keys, counts, h * self.v + ids[t])
      n1 = self._lookup(hist, types, h)
      safe = np.where(seen, total, 1.0)
      mixed = np.maximum(c - self.d, 0) / safe + self.d * n1 / safe * p[t]
      p[t] = np.where(seen, mixed, p[t])
    return np.log(p)

  def perplexity(self, sequences) -> float:
    """exp(mean −ln p) over all positions of all sequences (each scored from its own start)."""
    nll = np.concatenate([-self.log_probs(s) for s in sequences if len(s)])
    return float(np.exp(nll.mean()))
