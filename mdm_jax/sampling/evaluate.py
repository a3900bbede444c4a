"""Evaluation: validation ELBO per modality with standard errors, and quality measures of samples.

ELBO (METHOD.md §1.3, §1.6). Every validation sequence gets K diffusion times, stratified over [eps, 1) with one
jittered point per cell (`diffusion.sample_t`, the lab's antithetic t), each with its own mask; the training
loss (`diffusion.loss_terms`, prompts never masked, pads excluded) is averaged over the K times, giving an unbiased
per-sequence NELBO split by modality. Per-token NELBO is Σ_b nelbo_b / Σ_b tokens_b. Two standard errors:
  se     over sequences (delta method for the ratio; counts data and Monte Carlo noise): the error bar for
         "how good is the model on this distribution";
  se_mc  Monte Carlo only (collapsed strata: adjacent strata pairs, (y_2j − y_2j+1)² estimates their variance sum;
         conservative): the error bar for "how well did K samples pin down the ELBO of this validation set".
Estimator variance (what a noise schedule changes; the ELBO itself is schedule-invariant in continuous time):
  single_t_var  Σ_b σ²_b / Σ_b n_b, where σ²_b is the variance of sequence b's NELBO at one uniform t (one mask)
         and n_b its tokens: one t per sequence over N tokens gives a per-token NELBO with variance single_t_var / N.
         The K stratified draws, pooled, are uniform draws, so σ²_b = mean_k (y_k − ȳ)² + Var(ȳ), with Var(ȳ) from
         the collapsed strata (slightly conservative).

Samples. Generative perplexity under the lab's n-gram reference (`reference.KneserNey`), token entropy (entropy of
each sample's empirical token distribution, in nats: repetition drives it down), and for images and audio the
nearest-neighbour distance to held-out data in the tokenizer's reconstruction space (decoded pixels in [0, 1] as
MSE; decoded log-mel frames as RMS dB), next to the same distance from each held-out item to the other held-out
items (the real-data baseline).
"""
import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from mdm_jax import diffusion
from mdm_jax.config import DiffusionConfig
from mdm_jax.data.vocab import MODALITIES, Vocab
from mdm_jax.errors import UserError

DB = 20.0 / math.log(10.0)


def _per_sequence_nelbo(apply_fn, batch, key, t_samples: int, dcfg: DiffusionConfig, mask_id: int):
  """[K, B, M] weighted masked CE of each sequence at each of its K stratified times; [B, M] tokens."""
  tokens_BxL = batch["tokens"]
  b, length = tokens_BxL.shape
  maskable_BxL = batch["loss_mask"] & ~batch["prompt"]
  key_t, key_mask = jax.random.split(key)
  t_BxK = jax.vmap(lambda k: diffusion.sample_t(k, t_samples, dcfg))(jax.random.split(key_t, b))
  per_row = jax.vmap(lambda *row: diffusion.loss_terms(*(x[None] for x in row), dcfg, mask_id))

  def one_time(_, xs):
    t_B, key_k = xs
    z_BxL, masked_BxL = diffusion.corrupt(jax.random.uniform(key_k, (b, length)), tokens_BxL, maskable_BxL, t_B,
                                          dcfg, mask_id)
    terms = per_row(apply_fn(z_BxL), tokens_BxL, masked_BxL, t_B, batch["loss_mask"], batch["modality"])
    return None, (terms.nelbo_by_modality, terms.tokens_by_modality)

  _, (nelbo_KxBxM, tokens_KxBxM) = jax.lax.scan(one_time, None, (t_BxK.T, jax.random.split(key_mask, t_samples)))
  return nelbo_KxBxM, tokens_KxBxM[0]


_per_sequence_nelbo_jit = jax.jit(_per_sequence_nelbo, static_argnames=("t_samples", "dcfg", "mask_id"))


def ratio_with_se(num_B: np.ndarray, den_B: np.ndarray, var_mc_B: np.ndarray, var_t_B: np.ndarray) -> dict:
  """Σ num / Σ den, its delta-method standard error over the B units, the Monte Carlo part of it, and the
  single-t variance per token (Σ var_t / Σ den)."""
  total = den_B.sum()
  r = num_B.sum() / total
  n = len(num_B)
  resid = num_B - r * den_B
  se = math.sqrt(n / (n - 1) * float(np.sum(resid ** 2))) / total if n > 1 else float("nan")
  return {"nats_per_token": float(r), "bits_per_token": float(r / math.log(2)), "se": se,
          "se_mc": math.sqrt(float(var_mc_B.sum())) / total, "single_t_var": float(var_t_B.sum() / total),
          "tokens": float(total), "sequences": int(n)}


def elbo(apply_fn, batches: list[dict], dcfg: DiffusionConfig, mask_id: int, t_samples: int = 16,
         seed: int = 0) -> dict:
  """Validation NELBO per modality and overall (nats and bits per token) with `se` and `se_mc`."""
  if t_samples < 2 or t_samples % 2:
    raise UserError("--t-samples", f"must be an even number >= 2 (strata are paired for se_mc), got {t_samples}")
  dcfg = dataclasses.replace(dcfg, antithetic=True)
  nelbo, tokens = [], []
  for i, batch in enumerate(batches):
    batch = {k: jnp.asarray(batch[k]) for k in ("tokens", "loss_mask", "modality")} | {
        "prompt": jnp.asarray(batch.get("prompt", np.zeros_like(batch["loss_mask"])))}
    n_KxBxM, t_BxM = jax.device_get(_per_sequence_nelbo_jit(
        apply_fn, batch, jax.random.fold_in(jax.random.key(seed), i), t_samples, dcfg, mask_id))
    nelbo.append(np.asarray(n_KxBxM, np.float64))
    tokens.append(np.asarray(t_BxM, np.float64))
  y_KxBxM, tok_BxM = np.concatenate(nelbo, axis=1), np.concatenate(tokens, axis=0)
  k = y_KxBxM.shape[0]
  var_mc_BxM = _collapsed_strata_var(y_KxBxM)
  var_t_BxM = y_KxBxM.var(axis=0) + var_mc_BxM   # one uniform t: spread of the pooled draws + Var(mean)
  out = {"t_samples": k, "estimator": "stratified t per sequence; se over sequences, se_mc collapsed strata"}
  for m, name in enumerate(MODALITIES):
    present = tok_BxM[:, m] > 0
    if present.sum() >= 1:
      out[name] = ratio_with_se(y_KxBxM[:, present, m].mean(0), tok_BxM[present, m], var_mc_BxM[present, m],
                                var_t_BxM[present, m])
  all_KxB = y_KxBxM.sum(axis=2)
  var_mc_B = _collapsed_strata_var(all_KxB)
  out["all"] = ratio_with_se(all_KxB.mean(0), tok_BxM.sum(1), var_mc_B, all_KxB.var(axis=0) + var_mc_B)
  return out


def _collapsed_strata_var(y_Kx):
  """Var of the mean of K stratified draws (axis 0), from adjacent strata pairs: Σ_j (y_2j − y_2j+1)² / K²."""
  return np.sum((y_Kx[0::2] - y_Kx[1::2]) ** 2, axis=0) / y_Kx.shape[0] ** 2


def token_entropy(sequences) -> float:
  """Mean over samples of the entropy (nats) of each sample's empirical token distribution."""
  values = []
  for s in sequences:
    _, counts = np.unique(np.asarray(s), return_counts=True)
    if counts.sum():
      p = counts / counts.sum()
      values.append(float(-(p * np.log(p)).sum()))
  return float(np.mean(values)) if values else float("nan")


def text_ids(tokens, vocab: Vocab) -> np.ndarray:
  """The reference model's ids of a row's text: text ids as they are, [EOS] as text_size, the rest dropped."""
  tokens = np.asarray(tokens)
  eos = tokens == vocab.id("[EOS]")
  keep = (tokens >= 0) & (tokens < vocab.text_size) | eos
  return np.where(eos, vocab.text_size, tokens)[keep].astype(np.int64)


def nn_distance(gen_NxD: np.ndarray, ref_MxD: np.ndarray, gen_groups=None, ref_groups=None,
                exclude=None) -> float:
  """Mean over generated items of the mean squared difference to the nearest reference item (of the same group).

  exclude: [N] index of a reference item that generated item i may not use (its own held-out pair; for the
  real-data baseline, gen = ref[:N] and exclude = arange(N) leaves each item out of its own search).
  """
  gen_NxD, ref_MxD = np.asarray(gen_NxD, np.float64), np.asarray(ref_MxD, np.float64)
  d_NxM = (np.sum(gen_NxD ** 2, 1)[:, None] - 2 * gen_NxD @ ref_MxD.T + np.sum(ref_MxD ** 2, 1)[None, :])
  d_NxM = np.maximum(d_NxM, 0) / gen_NxD.shape[1]
  if gen_groups is not None:
    d_NxM = np.where(np.asarray(gen_groups)[:, None] == np.asarray(ref_groups)[None, :], d_NxM, np.inf)
  if exclude is not None:
    d_NxM[np.arange(len(d_NxM)), np.asarray(exclude)] = np.inf
  best_N = d_NxM.min(axis=1)
  best_N = best_N[np.isfinite(best_N)]
  return float(best_N.mean()) if best_N.size else float("nan")


def audio_features(logmel_frames: list[np.ndarray]) -> np.ndarray:
  """[N, 2·n_mels] per-utterance mean and standard deviation of log-mel frames, in dB."""
  return np.stack([np.concatenate([f.mean(0), f.std(0)]) * DB for f in logmel_frames])
