"""The n-gram reference model against a direct transcription of interpolated Kneser-Ney, and its invariants."""
import collections
import math

import numpy as np
import pytest

from mdm_jax.sampling.reference import KneserNey


def naive_kn(corpus: list[int], vocab: int, order: int, d: float):
  """Interpolated KN from counting dictionaries (Chen & Goodman eq. 17), one query at a time."""
  grams = [collections.Counter(tuple(corpus[i:i + k]) for i in range(len(corpus) - k + 1))
           for k in range(order + 1)]

  def counts(k):   # the counts order k is estimated from: raw at the top, continuation counts below
    if k == order:
      return grams[k]
    return collections.Counter(g[1:] for g in grams[k + 1])

  tables = {k: counts(k) for k in range(1, order + 1)}

  def prob(word, history: tuple) -> float:
    p = 1.0 / vocab
    for k in range(1, len(history) + 2):
      h = history[len(history) - (k - 1):] if k > 1 else ()
      table = tables[k]
      total = sum(c for g, c in table.items() if g[:-1] == h)
      if total == 0:
        continue
      types = sum(1 for g in table if g[:-1] == h)
      p = max(table.get(h + (word,), 0) - d, 0) / total + d * types / total * p
    return p

  def log_probs(seq):
    return [math.log(prob(seq[t], tuple(seq[max(0, t - order + 1):t]))) for t in range(len(seq))]

  return log_probs


@pytest.mark.parametrize("order", [1, 2, 3])
def test_matches_the_textbook_formula(order):
  rng = np.random.default_rng(order)
  corpus = rng.choice(7, size=300, p=[0.3, 0.2, 0.2, 0.1, 0.1, 0.07, 0.03]).tolist()
  query = rng.integers(0, 8, 40).tolist()   # id 7 never occurs in training
  fast = KneserNey(8, order, 0.75).fit(corpus).log_probs(query)
  np.testing.assert_allclose(fast, naive_kn(corpus, 8, order, 0.75)(query), rtol=1e-12)


def test_probabilities_sum_to_one_for_seen_and_unseen_histories():
  rng = np.random.default_rng(0)
  lm = KneserNey(6, 3).fit(rng.integers(0, 5, 400))   # id 5 never seen
  for history in ([0, 1], [4, 4], [5, 5], [2]):
    total = sum(math.exp(lm.log_probs(history + [w])[-1]) for w in range(6))
    assert total == pytest.approx(1.0, abs=1e-12)


def test_perplexity_tracks_predictability():
  rng = np.random.default_rng(1)
  periodic = np.tile([0, 1, 2, 3], 200)
  noise = rng.integers(0, 4, 800)
  assert KneserNey(4, 3).fit(periodic).perplexity([periodic[:40]]) < 1.5
  assert KneserNey(4, 3).fit(noise).perplexity([rng.integers(0, 4, 400)]) == pytest.approx(4.0, rel=0.05)
