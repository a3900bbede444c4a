"""The masked-diffusion objective against independent numpy computations."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mdm_jax import diffusion
from mdm_jax.config import DiffusionConfig

SCHEDULES = ("linear", "loglinear", "cosine", "polynomial")


def numpy_alpha(name, t, p=2.0, eps=1e-3):
  return {"linear": 1 - t, "loglinear": 1 - (1 - eps) * t, "cosine": np.cos(np.pi * t / 2),
          "polynomial": 1 - t ** p}[name]


@pytest.mark.parametrize("name", SCHEDULES)
def test_weight_is_minus_alpha_prime_over_one_minus_alpha(name):
  cfg = DiffusionConfig(schedule=name, poly_exponent=2.0)
  t = np.linspace(0.01, 0.99, 41)
  h = 1e-6
  alpha_prime = (numpy_alpha(name, t + h) - numpy_alpha(name, t - h)) / (2 * h)   # float64 central difference
  expected = -alpha_prime / (1 - numpy_alpha(name, t))
  np.testing.assert_allclose(np.asarray(diffusion.weight(cfg, jnp.asarray(t))), expected, rtol=2e-4)
  np.testing.assert_allclose(np.asarray(diffusion.mask_prob(cfg, jnp.asarray(t))), 1 - numpy_alpha(name, t),
                             rtol=1e-5, atol=1e-6)


def test_cosine_mask_prob_accurate_near_zero():
  cfg = DiffusionConfig(schedule="cosine")
  t = 1e-3
  exact = 1 - math.cos(math.pi * t / 2)   # float64
  assert abs(float(diffusion.mask_prob(cfg, jnp.float32(t))) / exact - 1) < 1e-5


def test_antithetic_times_fill_every_cell_once():
  cfg = DiffusionConfig(antithetic=True, sampling_eps=1e-3)
  n = 64
  t = np.asarray(diffusion.sample_t(jax.random.key(3), n, cfg))
  e = (t - cfg.sampling_eps) / (1 - cfg.sampling_eps)
  assert t.min() >= cfg.sampling_eps and t.max() < 1.0
  np.testing.assert_array_equal(np.floor(e * n).astype(int), np.arange(n))   # one point per cell, in order


def numpy_loss(logits, tokens, masked, t, loss_mask, name, mask_id):
  """Σ_b w(t_b) Σ_{masked ℓ} CE / Σ non-pad tokens, with the [MASK] logit removed (SUBS)."""
  logits = logits.astype(np.float64)
  keep = np.ones(logits.shape[-1], bool)
  keep[mask_id] = False
  lse = np.log(np.exp(logits[..., keep]).sum(-1))
  ce = lse - np.take_along_axis(logits, tokens[..., None], -1)[..., 0]
  h = 1e-6
  w = -(numpy_alpha(name, t + h) - numpy_alpha(name, t - h)) / (2 * h) / (1 - numpy_alpha(name, t))
  return float((w[:, None] * ce * (masked & loss_mask)).sum() / loss_mask.sum())


@pytest.mark.parametrize("name", SCHEDULES)
def test_loss_matches_numpy_on_fixed_batch(name):
  rng = np.random.default_rng(0)
  b, l, v, mask_id = 3, 7, 11, 10
  logits = rng.normal(size=(b, l, v)).astype(np.float32)
  tokens = rng.integers(0, v - 1, size=(b, l))
  masked = rng.random((b, l)) < 0.5
  loss_mask = np.ones((b, l), bool)
  loss_mask[2, 5:] = False   # padding at the end of one row
  t = np.array([0.2, 0.5, 0.9])
  cfg = DiffusionConfig(schedule=name)
  terms = diffusion.loss_terms(jnp.asarray(logits), jnp.asarray(tokens), jnp.asarray(masked), jnp.asarray(t),
                               jnp.asarray(loss_mask), jnp.zeros((b, l), jnp.int32), cfg, mask_id)
  got = float(terms.nelbo / terms.tokens)
  assert got == pytest.approx(numpy_loss(logits, tokens, masked, t, loss_mask, name, mask_id), rel=1e-5)
  assert float(terms.tokens) == loss_mask.sum()
  assert float(terms.masked) == (masked & loss_mask).sum()


def test_subs_mask_logit_gets_no_probability_and_unmasked_positions_add_nothing():
  logits = jnp.zeros((1, 2, 4)).at[0, :, 3].set(100.0)   # the model "wants" [MASK] (id 3)
  ce = diffusion.cross_entropy(logits, jnp.array([[0, 1]]), mask_id=3)
  np.testing.assert_allclose(np.asarray(ce), np.log(3.0), rtol=1e-6)   # uniform over the 3 real ids
  terms = diffusion.loss_terms(logits, jnp.array([[0, 1]]), jnp.array([[False, False]]), jnp.array([0.5]),
                               jnp.array([[True, True]]), jnp.zeros((1, 2), jnp.int32), DiffusionConfig(), 3)
  assert float(terms.nelbo) == 0.0


def test_corrupt_masks_at_rate_and_never_touches_padding():
  cfg = DiffusionConfig()
  b, l = 64, 256
  tokens = jnp.ones((b, l), jnp.int32)
  maskable = jnp.ones((b, l), bool).at[:, -16:].set(False)
  t = jnp.full((b,), 0.3)
  z, masked = diffusion.corrupt(jax.random.uniform(jax.random.key(0), (b, l)), tokens, maskable, t, cfg, 99)
  assert not bool(masked[:, -16:].any())
  assert abs(float(masked[:, :-16].mean()) - 0.3) < 0.01
  assert bool(((z == 99) == masked).all())


def test_per_modality_sums_add_up():
  rng = np.random.default_rng(1)
  logits = jnp.asarray(rng.normal(size=(2, 6, 8)), jnp.float32)
  tokens = jnp.asarray(rng.integers(0, 7, (2, 6)))
  modality = jnp.asarray([[0, 0, 1, 1, 2, 2], [0, 1, 2, 0, 1, 2]])
  terms = diffusion.loss_terms(logits, tokens, jnp.ones((2, 6), bool), jnp.array([0.3, 0.7]),
                               jnp.ones((2, 6), bool), modality, DiffusionConfig(), 7)
  np.testing.assert_allclose(float(terms.nelbo_by_modality.sum()), float(terms.nelbo), rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(terms.tokens_by_modality), [4, 4, 4])
