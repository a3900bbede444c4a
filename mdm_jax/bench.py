"""The lab's own train step under the benchmark contract (benchmarks/train_step.py, impl "mdm-lab").

`make_step(name_or_dims, batch, seq) -> (step_fn, state)` builds the *training* program — `mdm_jax.step.build`
with the same model, loss and optimizer as `mdm-lab train`, not a separate fast path — at a benchmark size
(benchmarks/sizes.py: "tiny", "small" or a dict of dims), with the reference's settings: linear schedule,
ε = 1e-3, AdamW (3e-4, β .9/.95, ε 1e-8, WD 0.1) after global-norm clipping at 1, constant LR, SP init σ = 0.02.
`state = step_fn(state)` runs `step_fn.steps_per_call` full train steps on a fixed batch, as the trainer does
(one device call of `train_chunk`, cfg.train.steps_per_call steps), and blocks on its result.

Differences from the torch reference that do not change the work: the joint vocabulary puts [MASK] at the first
special id rather than at vocab − 1 (the batch never holds it), and norm scales are not weight-decayed.
"""
import jax
import numpy as np

from mdm_jax import cpu_attention, flops, loop, optim, sharding, step as step_lib
from mdm_jax.config import Config, load_config
from mdm_jax.data.vocab import SPECIALS


def bench_config(name_or_dims, batch: int | None = None, seq: int | None = None) -> Config:
  """The lab Config of a benchmark size: same shapes and optimizer constants as benchmarks/torch_reference.py."""
  from benchmarks import sizes   # the benchmark's shared constants; imported late (benchmarks is a dev package)
  b = sizes.resolve(name_or_dims, batch, seq)
  return load_config(None, [
      f"model.d_model={b.d}", f"model.n_layers={b.n_layers}", f"model.n_heads={b.n_heads}", f"model.d_ff={b.ff}",
      f"model.norm_eps={sizes.NORM_EPS}", f"model.rope_theta={sizes.ROPE_THETA}", f"model.init_std={sizes.INIT_STD}",
      "model.qk_norm=true", f"data.seq_len={b.seq}", f"data.text_vocab_size={b.vocab - len(SPECIALS)}",
      "diffusion.schedule=linear", f"diffusion.sampling_eps={sizes.SAMPLING_EPS}", "diffusion.antithetic=true",
      f"optim.lr={sizes.LR}", f"optim.b1={sizes.BETA1}", f"optim.b2={sizes.BETA2}", f"optim.eps={sizes.ADAM_EPS}",
      f"optim.weight_decay={sizes.WEIGHT_DECAY}", f"optim.grad_clip={sizes.CLIP_NORM}", "optim.lr_schedule=constant",
      "optim.warmup=0", f"batch.logical={b.batch}", f"batch.physical={b.batch}", "train.steps=1000000",
  ])


def fixed_batch(cfg: Config, seed: int = 0) -> dict:
  """The benchmark's token batch in the trainer's layout [K=1, B, L] (text, no padding, no prompt)."""
  from benchmarks import sizes
  tokens = sizes.fixed_batch(sizes.BenchConfig(d=1, n_layers=1, n_heads=1, ff=1, vocab=cfg.vocab_size,
                                               seq=cfg.data.seq_len, batch=cfg.batch.logical), seed)
  tokens = np.where(tokens == cfg.vocab.mask_id, 0, tokens)   # [MASK] is never an input token
  shape = (1, *tokens.shape)
  return {"tokens": tokens.reshape(shape), "loss_mask": np.ones(shape, bool), "modality": np.zeros(shape, np.int32)}


def make_step(name_or_dims, batch: int | None = None, seq: int | None = None, seed: int = 0, mesh=None,
              steps_per_call: int | None = None):
  """(step_fn, state) running the lab's compiled train program; see the module docstring. `steps_per_call`
  overrides the config's (1 = one step per device call, to measure what the device loop is worth)."""
  cfg = bench_config(name_or_dims, batch, seq)
  if steps_per_call is not None:
    cfg = cfg.replace(**{"train.steps_per_call": steps_per_call})
  mesh = mesh or sharding.make_mesh(cfg.mesh, jax.devices()[:1])
  steps = step_lib.build(cfg, mesh)
  one = fixed_batch(cfg, seed)
  batch_KxBxL = jax.device_put(one, steps.batch_sharding)
  state = steps.init(step_lib.seed_key(seed), optim.hyper_arrays(optim.hyperparams(cfg)))
  per_call = cfg.train.steps_per_call
  batches = jax.device_put(loop.stack_batches([one] * per_call, per_call), steps.chunk_batch_sharding)
  train_chunk, n = steps.train_chunk, np.int32(per_call)

  def step_fn(state):
    return jax.block_until_ready(train_chunk(state, batches, n)[0])

  step_fn.cfg, step_fn.steps, step_fn.batch = cfg, steps, batch_KxBxL   # for FLOP counts and tests
  step_fn.steps_per_call = per_call
  return step_fn, state


def compiled_flops(step_fn, state) -> float:
  """FLOPs of one compiled train step per XLA's cost analysis, with the head on every row: the model FLOPs that
  the formula counts (the scored head's loop is data-dependent, and XLA counts a loop's body once), and XLA's own
  attention dots (cost analysis cannot see into the CPU attention kernel, which does the same dots)."""
  steps = step_lib.build(step_fn.cfg, step_fn.steps.mesh, scored_head=False)
  with jax.set_mesh(steps.mesh), cpu_attention.xla_only():
    cost = steps.train.jitted.lower(state, step_fn.batch).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  return float(cost["flops"])


def formula_flops(cfg: Config) -> float:
  """Train FLOPs of one step by the lab's accounting (METHOD.md §6.1)."""
  return flops.train_flops_per_token(cfg) * cfg.tokens_per_step

