"""The masked-diffusion objective (MDLM / MD4 absorbing-state ELBO, METHOD.md §1).

NELBO(x0) = ∫ w(t) E_{z_t}[ Σ_{masked ℓ} −log p(x0_ℓ | z_t) ] dt,  w(t) = −α'_t / (1 − α_t).
A training step draws one t per sequence (stratified over the global batch), masks each maskable position with
probability 1 − α_t, and scores only masked positions (SUBS: the [MASK] logit is −∞ and unmasked positions carry
their input over, so they add zero loss). Loss terms come back as *sums* so that micro-batches, devices and
modalities can be combined exactly before dividing by the number of non-pad tokens.
"""
import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from mdm_jax.config import DiffusionConfig

N_MODALITIES = 3


def keep_prob(cfg: DiffusionConfig, t):
  """α_t: the probability that a position is still clean at time t."""
  if cfg.schedule == "linear":
    return 1.0 - t
  if cfg.schedule == "loglinear":
    return 1.0 - (1.0 - cfg.sampling_eps) * t
  if cfg.schedule == "cosine":
    return jnp.cos(0.5 * math.pi * t)
  if cfg.schedule == "polynomial":
    return 1.0 - t ** cfg.poly_exponent
  raise ValueError(cfg.schedule)


def mask_prob(cfg: DiffusionConfig, t):
  """1 − α_t, written to stay accurate for small t (1 − cos x = 2 sin²(x/2))."""
  if cfg.schedule == "cosine":
    return 2.0 * jnp.sin(0.25 * math.pi * t) ** 2
  return 1.0 - keep_prob(cfg, t)


def weight(cfg: DiffusionConfig, t):
  """w(t) = −α'_t / (1 − α_t), in closed form per schedule."""
  if cfg.schedule in ("linear", "loglinear"):
    return 1.0 / t
  if cfg.schedule == "cosine":
    return 0.5 * math.pi / jnp.tan(0.25 * math.pi * t)   # (π/2)·sin(πt/2)/(1 − cos(πt/2)) = (π/2)·cot(πt/4)
  if cfg.schedule == "polynomial":
    return cfg.poly_exponent / t
  raise ValueError(cfg.schedule)


def sample_t(key, n: int, cfg: DiffusionConfig):
  """n diffusion times in [eps, 1). Antithetic: one jittered point in each of n equal cells (global indices)."""
  u = jax.random.uniform(key, (n,))
  e = (u + jnp.arange(n)) / n if cfg.antithetic else u
  return (1.0 - cfg.sampling_eps) * e + cfg.sampling_eps


def eval_t_grid(cfg: DiffusionConfig):
  """Midpoint grid for the validation ELBO quadrature: NELBO ≈ mean_i w(t_i)·E[Σ masked CE | t_i]."""
  e = (jnp.arange(cfg.eval_t_points) + 0.5) / cfg.eval_t_points
  return (1.0 - cfg.sampling_eps) * e + cfg.sampling_eps


def corrupt(uniform_BxL, tokens_BxL, maskable_BxL, t_B, cfg: DiffusionConfig, mask_id: int):
  """Forward process: replace each maskable position by [MASK] with probability 1 − α_t."""
  masked_BxL = (uniform_BxL < mask_prob(cfg, t_B)[:, None]) & maskable_BxL
  return jnp.where(masked_BxL, mask_id, tokens_BxL), masked_BxL


class LossTerms(NamedTuple):
  """Sums over a (micro-)batch; divide nelbo by tokens for nats per token."""
  nelbo: jax.Array                # Σ_b w(t_b) Σ_{masked ℓ} CE
  tokens: jax.Array               # non-pad tokens
  masked: jax.Array               # masked positions scored
  nelbo_by_modality: jax.Array    # [N_MODALITIES]
  tokens_by_modality: jax.Array   # [N_MODALITIES]

  def __add__(self, other):
    return LossTerms(*(a + b for a, b in zip(self, other)))

  @staticmethod
  def zeros():
    z = jnp.zeros((), jnp.float32)
    return LossTerms(z, z, z, jnp.zeros(N_MODALITIES), jnp.zeros(N_MODALITIES))


def cross_entropy(logits_BxLxV, targets_BxL, mask_id: int):
  """−log softmax(logits)[target] with the [MASK] logit at −∞ (SUBS), without a [B, L, V] one-hot."""
  return _cross_entropy(logits_BxLxV.astype(jnp.float32), targets_BxL, mask_id)


def _logsumexp_without(logits_NxV, mask_id: int):
  """log Σ_{v ≠ mask_id} exp(logits_v): the [MASK] column is left out inside the one pass, not added as −∞."""
  keep_V = jnp.arange(logits_NxV.shape[-1]) != mask_id
  top_N = jnp.max(jnp.where(keep_V, logits_NxV, -jnp.inf), axis=-1)
  total_N = jnp.sum(jnp.where(keep_V, jnp.exp(logits_NxV - top_N[..., None]), 0.0), axis=-1)
  return top_N + jnp.log(total_N)


def ce_gradient(logits_NxV, lse_N, targets_N, d_ce_N, mask_id: int):
  """d CE / d logits · d_ce = (softmax − one-hot(target)) · d_ce in one elementwise pass (no scatter, no saved
  softmax), the [MASK] column zero."""
  vocab_V = jnp.arange(logits_NxV.shape[-1])
  probs = jnp.where(vocab_V == mask_id, 0.0, jnp.exp(logits_NxV - lse_N[..., None]))
  onehot = (vocab_V == targets_N[..., None]).astype(jnp.float32)
  return d_ce_N[..., None] * (probs - onehot)


def ce_and_lse(logits_NxV, targets_N, mask_id: int):
  """(CE, logsumexp without [MASK]) per row; the logsumexp is what `ce_gradient` needs."""
  lse_N = _logsumexp_without(logits_NxV, mask_id)
  return lse_N - jnp.take_along_axis(logits_NxV, targets_N[..., None], axis=-1)[..., 0], lse_N


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _cross_entropy(logits_BxLxV, targets_BxL, mask_id: int):
  return ce_and_lse(logits_BxLxV, targets_BxL, mask_id)[0]


def _cross_entropy_fwd(logits_BxLxV, targets_BxL, mask_id: int):
  ce_BxL, lse_BxL = ce_and_lse(logits_BxLxV, targets_BxL, mask_id)
  return ce_BxL, (logits_BxLxV, lse_BxL, targets_BxL)


def _cross_entropy_bwd(mask_id: int, res, d_ce_BxL):
  logits_BxLxV, lse_BxL, targets_BxL = res
  return ce_gradient(logits_BxLxV, lse_BxL, targets_BxL, d_ce_BxL, mask_id), None


_cross_entropy.defvjp(_cross_entropy_fwd, _cross_entropy_bwd)


def loss_terms(logits_BxLxV, tokens_BxL, masked_BxL, t_B, loss_mask_BxL, modality_BxL, cfg: DiffusionConfig,
               mask_id: int) -> LossTerms:
  """The weighted masked cross-entropy of one batch, as sums (per modality too)."""
  ce_BxL = cross_entropy(logits_BxLxV, tokens_BxL, mask_id)
  return terms_from_ce(ce_BxL, masked_BxL, t_B, loss_mask_BxL, modality_BxL, cfg)


def scored_weight(masked_BxL, t_B, loss_mask_BxL, cfg: DiffusionConfig):
  """(scored [B, L], w(t) at scored positions and 0 elsewhere): what the loss sums CE with."""
  scored_BxL = masked_BxL & loss_mask_BxL
  return scored_BxL, jnp.where(scored_BxL, weight(cfg, t_B)[:, None], 0.0)


def terms_from_ce(ce_BxL, masked_BxL, t_B, loss_mask_BxL, modality_BxL, cfg: DiffusionConfig) -> LossTerms:
  """LossTerms of a batch from its per-position cross-entropy (only scored positions count)."""
  scored_BxL, weight_BxL = scored_weight(masked_BxL, t_B, loss_mask_BxL, cfg)
  contrib_BxL = jnp.where(scored_BxL, ce_BxL * weight_BxL, 0.0)
  onehot_BxLxM = jax.nn.one_hot(modality_BxL, N_MODALITIES, dtype=jnp.float32)   # M = 3, cheap
  real_BxL = loss_mask_BxL.astype(jnp.float32)
  return LossTerms(
      nelbo=contrib_BxL.sum(),
      tokens=real_BxL.sum(),
      masked=scored_BxL.sum().astype(jnp.float32),
      nelbo_by_modality=jnp.einsum("bl,blm->m", contrib_BxL, onehot_BxLxM),
      tokens_by_modality=jnp.einsum("bl,blm->m", real_BxL, onehot_BxLxM),
  )
