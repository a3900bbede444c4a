"""Samplers over a masked-diffusion denoiser (METHOD.md §7): jitted, batched, and sharded like training.

A request is a [B, L] token array whose positions to generate hold [MASK]; everything else (task token, caption,
boundary tokens, padding, a text prefix or suffix) is the prompt and is never written. A row's generated positions,
left to right, are its *slots*; semi-autoregressive blocks are runs of `block_length` consecutive slots, generated
left to right, each with an equal share of the step budget (the first `steps mod blocks` blocks get one more).
Step j of a block's K steps reveals at least k = ceil(remaining / (K − j)) slots of that block. With nothing else
revealed this is ⌊M/K⌋ plus one in the first M mod K steps for M masked slots: the linear reveal schedule (§7.1).
Which slots:

  random     k uniformly random slots: ancestral unmasking in a random order
  topk       the k most confident slots, confidence p_θ(x̂ | z) of each slot's candidate x̂ (LLaDA `low_confidence`)
  threshold  every slot with confidence > λ, and at least the k most confident (Fast-dLLM, §7.2). With one step per
             slot (the default budget of `mdm-lab sample`), k = 1: the argmax fallback, so it never stalls, and
             `steps` bounds the number of model calls in every case.

Candidates are argmax(logits) at temperature 0, else argmax(logits/τ + G) with Gumbel noise G (§7.3). By default
G and the sum are float64: x64 is enabled only while this sampler is traced and run, and noise is drawn only for
the current block's slots (prompt and other blocks get none). Float32 fails in two documented ways: its uniform has
23 random bits, so G ≤ −log(−log(1 − 2⁻²³)) ≈ 15.9 and the tail is rounded down (a token 16 nats below the winner is
drawn 0.56× as often as it should be, at 17 nats 0.17×: Zheng et al., arXiv 2409.02908); and at low temperature
logits/τ is large, so float32 rounds the noise away and ties go to the lower index (tests/sampling). Both make
samples less diverse than the model: a lower effective temperature.

[MASK] is never a candidate (SUBS), and an optional per-position class table restricts slots to their modality's
ids (image slots can only become image codes). Steps with nothing left to reveal skip the model call, so `nfe`
counts real model calls.
"""
import contextlib
import dataclasses
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding

from mdm_jax import sharding
from mdm_jax.errors import UserError

SAMPLERS = ("random", "topk", "threshold")
GUMBEL_DTYPES = ("float64", "float32")


@dataclasses.dataclass(frozen=True)
class SamplerSpec:
  sampler: str = "topk"
  steps: int = 64               # model-call budget over all blocks (threshold may finish in fewer)
  temperature: float = 1.0      # 0: argmax candidates
  threshold: float = 0.9        # λ of the threshold sampler
  block_length: int = 0         # slots per semi-AR block; 0: one block
  gumbel_dtype: str = "float64"

  def __post_init__(self):
    if self.sampler not in SAMPLERS:
      raise UserError("--sampler", f"unknown sampler {self.sampler!r}", f"use one of {', '.join(SAMPLERS)}")
    if not (isinstance(self.steps, int) and self.steps >= 1):
      raise UserError("--steps", f"must be an integer >= 1, got {self.steps!r}", "e.g. --steps 64")
    if not (math.isfinite(self.temperature) and self.temperature >= 0):
      raise UserError("--temperature", f"must be a finite number >= 0, got {self.temperature!r}", "e.g. 1.0")
    if not 0 < self.threshold < 1:
      raise UserError("--threshold", f"λ must lie in (0, 1), got {self.threshold!r}", "e.g. 0.9")
    if not (isinstance(self.block_length, int) and self.block_length >= 0):
      raise UserError("--block-length", f"must be an integer >= 0, got {self.block_length!r}", "0 means one block")
    if self.gumbel_dtype not in GUMBEL_DTYPES:
      raise UserError("gumbel_dtype", f"unknown dtype {self.gumbel_dtype!r}", f"use {' or '.join(GUMBEL_DTYPES)}")

  def replace(self, **changes) -> "SamplerSpec":
    return dataclasses.replace(self, **changes)


class Samples(NamedTuple):
  tokens: np.ndarray          # [B, L] int32: prompt unchanged, every slot revealed
  revealed_at: np.ndarray     # [B, L] int32: the step that revealed each slot; -1 on the prompt
  nfe: int                    # model calls made for the batch
  row_steps: np.ndarray       # [B] steps in which the row revealed something


def slot_positions(tokens_BxL: np.ndarray, mask_id: int) -> np.ndarray:
  """[B, G] positions of each row's [MASK] slots, left to right; rows with fewer slots are padded with L."""
  gen_BxL = np.asarray(tokens_BxL) == mask_id
  b, length = gen_BxL.shape
  g = int(gen_BxL.sum(axis=1).max()) if b else 0
  out = np.full((b, g), length, np.int32)
  for i, row in enumerate(gen_BxL):
    pos = np.flatnonzero(row)
    out[i, :len(pos)] = pos
  return out


def candidates(logits_BxNxV, key, temperature, stochastic: bool, dtype: str):
  """Each slot's proposed token: argmax of logits, or of logits/τ + Gumbel noise computed in `dtype`."""
  if not stochastic:
    return jnp.argmax(logits_BxNxV, axis=-1).astype(jnp.int32)
  noise = jax.random.gumbel(key, logits_BxNxV.shape, dtype=dtype)
  score = logits_BxNxV.astype(dtype) / jnp.asarray(temperature, dtype) + noise
  return jnp.argmax(score, axis=-1).astype(jnp.int32)


def top_k_mask(conf_BxN, eligible_BxN, k_B):
  """The k most confident eligible slots of each row (ties: the leftmost first)."""
  score = jnp.where(eligible_BxN, conf_BxN, -jnp.inf)
  order = jnp.argsort(-score, axis=-1, stable=True)
  rank = jnp.argsort(order, axis=-1)
  return eligible_BxN & (rank < k_B[:, None])


def _block_of_step(s, steps, n_blocks: int):
  """(block, step within block, block's step count) when `steps` are shared out over `n_blocks` in order."""
  q, r = steps // n_blocks, steps % n_blocks
  long_steps = r * (q + 1)
  in_long = s < long_steps
  b = jnp.where(in_long, s // (q + 1), r + (s - long_steps) // q)
  j = jnp.where(in_long, s % (q + 1), (s - long_steps) % q)
  return b, j, q + (b < r)


def _run(apply_fn, tokens_BxL, slots_BxG, class_BxL, allowed_CxV, key, steps, temperature, threshold, *,
         kind: str, stochastic: bool, dtype: str, block: int, n_blocks: int, mask_id: int):
  b, length = tokens_BxL.shape
  slots_BxG = jnp.pad(slots_BxG, ((0, 0), (0, n_blocks * block - slots_BxG.shape[1])), constant_values=length)
  rows_Bx1 = jnp.arange(b, dtype=jnp.int32)[:, None]

  def body(s, carry):
    x_BxL, revealed_BxL, nfe, row_steps_B = carry
    blk, j, k_steps = _block_of_step(s, steps, n_blocks)
    pos_BxN = jax.lax.dynamic_slice_in_dim(slots_BxG, blk * block, block, axis=1)
    valid_BxN = pos_BxN < length
    safe_BxN = jnp.minimum(pos_BxN, length - 1)
    x_BxN = jnp.take_along_axis(x_BxL, safe_BxN, axis=1)
    eligible_BxN = valid_BxN & (x_BxN == mask_id)
    remaining_B = eligible_BxN.sum(axis=-1).astype(jnp.int32)

    def reveal(carry):
      x_BxL, revealed_BxL, nfe, row_steps_B = carry
      logits_BxNxV = jnp.take_along_axis(apply_fn(x_BxL).astype(jnp.float32), safe_BxN[..., None], axis=1)
      allowed_BxNxV = allowed_CxV[jnp.take_along_axis(class_BxL, safe_BxN, axis=1)]
      logits_BxNxV = jnp.where(allowed_BxNxV, logits_BxNxV, -jnp.inf)
      key_noise, key_order = jax.random.split(jax.random.fold_in(key, s))
      cand_BxN = candidates(logits_BxNxV, key_noise, temperature, stochastic, dtype)
      logp_BxNxV = jax.nn.log_softmax(logits_BxNxV, axis=-1)
      conf_BxN = jnp.exp(jnp.take_along_axis(logp_BxNxV, cand_BxN[..., None], axis=-1)[..., 0])
      if kind == "random":
        conf_BxN = jax.random.uniform(key_order, conf_BxN.shape, jnp.float32)
      steps_left = k_steps - j
      chosen_BxN = top_k_mask(conf_BxN, eligible_BxN, (remaining_B + steps_left - 1) // steps_left)
      if kind == "threshold":
        chosen_BxN |= eligible_BxN & (conf_BxN > threshold)
      write_BxN = jnp.where(valid_BxN, pos_BxN, length)   # padded slots point past the end: dropped
      x_BxL = x_BxL.at[rows_Bx1, write_BxN].set(jnp.where(chosen_BxN, cand_BxN, x_BxN), mode="drop")
      old_BxN = jnp.take_along_axis(revealed_BxL, safe_BxN, axis=1)
      step_BxN = jnp.where(chosen_BxN, s.astype(jnp.int32), old_BxN)
      revealed_BxL = revealed_BxL.at[rows_Bx1, write_BxN].set(step_BxN, mode="drop")
      x_BxL = sharding.constrain(x_BxL, ("batch", "length"))
      return x_BxL, revealed_BxL, nfe + 1, row_steps_B + (remaining_B > 0)

    return jax.lax.cond(jnp.any(remaining_B > 0), reveal, lambda c: c, carry)

  init = (tokens_BxL, jnp.full(tokens_BxL.shape, -1, jnp.int32), jnp.zeros((), jnp.int32),
          jnp.zeros((b,), jnp.int32))
  return jax.lax.fori_loop(0, steps, body, init)


_run_jit = jax.jit(_run, static_argnames=("kind", "stochastic", "dtype", "block", "n_blocks", "mask_id"))


def sample(apply_fn: Callable, tokens_BxL, key, spec: SamplerSpec, mask_id: int, class_BxL=None,
           allowed_CxV=None, mesh=None) -> Samples:
  """Fill every [MASK] of `tokens_BxL`, keeping all other positions fixed.

  apply_fn: tokens [B, L] -> logits [B, L, V]. Pass the model as `jax.tree_util.Partial(model.apply, graphdef,
  params)` so the parameters are traced inputs rather than constants baked into the program.
  class_BxL / allowed_CxV: optional per-position class ids and a [C, V] table of the tokens each class may take.
  mesh: when given, rows are sharded over data × fsdp (the batch is padded to a multiple of those ways).
  """
  key = jax.random.key(key) if isinstance(key, (int, np.integer)) else key
  tokens_BxL = np.asarray(tokens_BxL, np.int32)
  if tokens_BxL.ndim != 2 or tokens_BxL.shape[0] == 0:
    raise UserError("tokens", f"expected a non-empty [B, L] array, got shape {tokens_BxL.shape}")
  slots_BxG = slot_positions(tokens_BxL, mask_id)
  if slots_BxG.shape[1] == 0:
    raise UserError("prompt", "nothing to generate: the request has no [MASK] positions",
                    "leave room in the sequence for the output")
  block = min(spec.block_length or slots_BxG.shape[1], slots_BxG.shape[1])
  n_blocks = -(-slots_BxG.shape[1] // block)
  if spec.steps < n_blocks:
    raise UserError("--steps", f"{spec.steps} steps cannot cover {n_blocks} blocks of {block} slots",
                    f"use --steps >= {n_blocks} or a larger --block-length")
  if class_BxL is None:
    class_BxL = np.zeros(tokens_BxL.shape, np.int32)
  class_BxL = np.asarray(class_BxL, np.int32)
  if allowed_CxV is not None:
    allowed_CxV = np.array(allowed_CxV, bool)
    allowed_CxV[:, mask_id] = False   # SUBS: [MASK] is never a candidate
    if not allowed_CxV.any(axis=1).all() or class_BxL.min() < 0 or class_BxL.max() >= len(allowed_CxV):
      raise UserError("allowed_CxV", "every class used must allow at least one token")
  b = len(tokens_BxL)
  if mesh is not None:   # pad the batch to whole data-parallel shards; padded rows are dropped afterwards
    pad = (-b) % sharding.batch_ways(mesh)
    tokens_BxL, slots_BxG, class_BxL = (np.concatenate([a, np.repeat(a[-1:], pad, 0)])
                                        for a in (tokens_BxL, slots_BxG, class_BxL))
  if not isinstance(apply_fn, jax.tree_util.Partial):
    apply_fn = jax.tree_util.Partial(apply_fn)
  stochastic = spec.temperature > 0
  x64 = stochastic and spec.gumbel_dtype == "float64"
  with jax.enable_x64(x64), (jax.set_mesh(mesh) if mesh is not None else contextlib.nullcontext()):
    arrays = [tokens_BxL, slots_BxG, class_BxL]
    if mesh is not None:
      arrays = [jax.device_put(a, NamedSharding(mesh, sharding.batch_spec())) for a in arrays]
    table = _all_but_mask(apply_fn, tokens_BxL.shape, mask_id) if allowed_CxV is None else allowed_CxV
    temperature = jnp.asarray(spec.temperature, spec.gumbel_dtype if x64 else jnp.float32)
    out = _run_jit(apply_fn, *arrays, jnp.asarray(table), key, jnp.int32(spec.steps), temperature,
                   jnp.float32(spec.threshold), kind=spec.sampler,
                   stochastic=stochastic, dtype=spec.gumbel_dtype, block=block, n_blocks=n_blocks, mask_id=mask_id)
    x_BxL, revealed_BxL, nfe, row_steps_B = jax.device_get(out)
  return Samples(np.asarray(x_BxL[:b]), np.asarray(revealed_BxL[:b]), int(nfe), np.asarray(row_steps_B[:b]))


def _all_but_mask(apply_fn, shape, mask_id: int) -> np.ndarray:
  """A one-class table allowing every id but [MASK] (the vocabulary size is read off the logits' shape)."""
  vocab_size = jax.eval_shape(apply_fn, jax.ShapeDtypeStruct(shape, jnp.int32)).shape[-1]
  return (np.arange(vocab_size) != mask_id)[None, :]
