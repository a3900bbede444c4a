"""The jitted train and eval steps, in functional form (nnx.split once; params are a plain pytree).

The train step takes a logical batch shaped [K, B_micro, L] (K micro-steps of gradient accumulation), draws t and
the mask noise for the whole logical batch from (seed, step) — so results do not depend on the mesh or on K — and
accumulates *sums* of loss and gradient before dividing by the logical batch's non-pad token count. K micro-steps
therefore equal one step on the concatenated batch.

The trainer calls `train_chunk`: up to S steps per call in a device-side loop over S stacked batches (see `chunked`).
"""
import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from mdm_jax import diffusion, hostmem, model, optim, parametrization, sharding
from mdm_jax.config import Config

_TRAIN_STREAM, _INIT_STREAM = 1, 0
EVAL_KEY = 0x5EED   # the fixed mask seed of validation


def seed_key(seed) -> jax.Array:
  return jax.random.key_data(jax.random.key(seed))


def metrics_from_terms(terms: diffusion.LossTerms, prefix: str) -> dict:
  nats = terms.nelbo / terms.tokens
  out = {f"{prefix}/loss": nats, f"{prefix}/elbo_bits_per_token": nats / jnp.log(2.0)}
  out[f"{prefix}/nelbo_sum_by_modality"] = terms.nelbo_by_modality
  out[f"{prefix}/tokens_by_modality"] = terms.tokens_by_modality
  return out


@dataclasses.dataclass
class Steps:
  """Compiled programs of one run shape, plus the shardings needed to feed them."""
  init: Callable       # (rng, hyper arrays) -> state
  train: Callable      # (state, batch_KxBxL) -> (state, metrics)
  train_chunk: Callable   # (state, batches_SxKxBxL, n) -> (state, metrics of each step [S]); runs the first n
  evaluate: Callable   # (params, batch_BxL, batch_index) -> LossTerms
  raw: dict           # the un-jitted init/train/evaluate functions (for vmapped groups of runs)
  state_sharding: Any
  batch_sharding: Any
  chunk_batch_sharding: Any
  eval_batch_sharding: Any
  graphdef: Any
  param_shapes: Any
  mesh: Any


def build(cfg: Config, mesh, mult: model.Multipliers | None = None, scored_head: bool | None = None) -> Steps:
  """`scored_head`: the train step runs the head on masked positions only (`mdm_jax.scored_head`); by default when
  the batch is not split over devices (its row gather would gather the batch)."""
  vocab = cfg.vocab
  if scored_head is None:
    scored_head = sharding.batch_ways(mesh) == 1
  mult = mult or parametrization.multipliers(cfg)   # forward multipliers and init stds are compiled in
  graphdef, abstract_state = model.abstract(cfg.model, vocab.size, mult)
  from flax import nnx
  param_shapes = nnx.to_pure_dict(abstract_state)
  pspecs = sharding.param_specs(abstract_state)
  sharding.check_replication(param_shapes, pspecs, mesh)
  optimizer = optim.make_optimizer(param_shapes)
  hyper = optim.hyperparams(cfg)

  def init(rng, hyper_arrays):
    """A fresh train state; hyper-parameters come in as arrays so runs of one shape share this program."""
    params = model.init(cfg.model, vocab.size, jax.random.fold_in(jax.random.wrap_key_data(rng), _INIT_STREAM),
                        mult)[1]
    state = optim.init_state(params, hyper, optimizer)
    return {**state, "hyper": hyper_arrays, "rng": rng}

  abstract_state_tree = jax.eval_shape(init, jax.ShapeDtypeStruct((2,), jnp.uint32), optim.hyper_arrays(hyper))
  opt_specs = optax.tree_map_params(optimizer, lambda _, spec: spec, abstract_state_tree["opt"], pspecs,
                                    transform_non_params=lambda _: P(), is_leaf=lambda x: isinstance(x, P))
  state_specs = {"step": P(), "params": pspecs, "opt": opt_specs, "hyper": {k: P() for k in optim.hyper_arrays(hyper)},
                 "ema": pspecs if hyper["ema_decay"] > 0 else None, "rng": P()}
  state_sharding = sharding.named(mesh, state_specs)
  batch_sharding = NamedSharding(mesh, sharding.batch_spec(extra_leading=1))
  chunk_batch_sharding = NamedSharding(mesh, sharding.batch_spec(extra_leading=2))
  eval_batch_sharding = NamedSharding(mesh, sharding.batch_spec())
  dcfg, mask_id = cfg.diffusion, vocab.mask_id

  def loss_and_grad(params, batch, t_B, uniform_BxL):
    maskable = batch["loss_mask"] & ~batch.get("prompt", jnp.zeros_like(batch["loss_mask"]))
    z_BxL, masked_BxL = diffusion.corrupt(uniform_BxL, batch["tokens"], maskable, t_B, dcfg, mask_id)

    def objective(p):
      if scored_head:
        scored_BxL, weight_BxL = diffusion.scored_weight(masked_BxL, t_B, batch["loss_mask"], dcfg)
        nelbo, ce_BxL = model.apply_scored(graphdef, p, z_BxL, batch["tokens"], weight_BxL, scored_BxL, mask_id)
      else:
        ce_BxL = diffusion.cross_entropy(model.apply(graphdef, p, z_BxL), batch["tokens"], mask_id)
      terms = diffusion.terms_from_ce(ce_BxL, masked_BxL, t_B, batch["loss_mask"], batch["modality"], dcfg)
      return (nelbo if scored_head else terms.nelbo), terms

    (_, terms), grads = jax.value_and_grad(objective, has_aux=True)(params)
    return terms, grads

  def train(state, batch_KxBxL):
    k, b, length = batch_KxBxL["tokens"].shape
    key = jax.random.fold_in(jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), _TRAIN_STREAM),
                             state["step"])
    key_t, key_mask = jax.random.split(key)
    t_KxB = diffusion.sample_t(key_t, k * b, dcfg).reshape(k, b)
    uniform_KxBxL = jax.random.uniform(key_mask, (k * b, length)).reshape(k, b, length)
    uniform_KxBxL = jax.lax.with_sharding_constraint(uniform_KxBxL, sharding.batch_spec(extra_leading=1))
    if k == 1:
      terms, grads = loss_and_grad(state["params"], jax.tree.map(lambda x: x[0], batch_KxBxL), t_KxB[0],
                                   uniform_KxBxL[0])
    else:
      def micro(carry, xs):
        mb, t_B, u_BxL = xs
        terms, grads = loss_and_grad(state["params"], mb, t_B, u_BxL)
        return jax.tree.map(jnp.add, carry, (terms, grads)), None
      zeros = (diffusion.LossTerms.zeros(), jax.tree.map(jnp.zeros_like, state["params"]))
      (terms, grads), _ = jax.lax.scan(micro, zeros, (batch_KxBxL, t_KxB, uniform_KxBxL))
    grads = jax.tree.map(lambda g: g / terms.tokens, grads)   # d(nelbo_sum / tokens) of the logical batch
    state, opt_metrics = optim.update(state, grads, optimizer)
    return state, {**metrics_from_terms(terms, "train"), **opt_metrics}

  def evaluate(params, batch_BxL, batch_index):
    """Validation NELBO by midpoint quadrature over a fixed t grid, with a fixed mask seed."""
    b, length = batch_BxL["tokens"].shape
    key = jax.random.fold_in(jax.random.key(EVAL_KEY), batch_index)
    total = diffusion.LossTerms.zeros()
    grid = diffusion.eval_t_grid(dcfg)
    for i in range(dcfg.eval_t_points):
      u_BxL = jax.random.uniform(jax.random.fold_in(key, i), (b, length))
      t_B = jnp.full((b,), grid[i])
      maskable = batch_BxL["loss_mask"] & ~batch_BxL.get("prompt", jnp.zeros_like(batch_BxL["loss_mask"]))
      z_BxL, masked_BxL = diffusion.corrupt(u_BxL, batch_BxL["tokens"], maskable, t_B, dcfg, mask_id)
      logits = model.apply(graphdef, params, z_BxL)
      total = total + diffusion.loss_terms(logits, batch_BxL["tokens"], masked_BxL, t_B, batch_BxL["loss_mask"],
                                           batch_BxL["modality"], dcfg, mask_id)
    n = float(dcfg.eval_t_points)   # each t point scored every token once: average the sums over the grid
    return diffusion.LossTerms(total.nelbo / n, total.tokens / n, total.masked / n,
                               total.nelbo_by_modality / n, total.tokens_by_modality / n)

  replicated = NamedSharding(mesh, P())
  init_jit = jax.jit(init, in_shardings=(replicated, replicated), out_shardings=state_sharding)
  train_jit = jax.jit(train, in_shardings=(state_sharding, batch_sharding),
                      out_shardings=(state_sharding, replicated), donate_argnums=0)
  eval_jit = jax.jit(evaluate, in_shardings=(state_sharding["params"], eval_batch_sharding, replicated),
                     out_shardings=replicated)
  chunk_jit = jax.jit(chunked(train), in_shardings=(state_sharding, chunk_batch_sharding, replicated),
                      out_shardings=(state_sharding, replicated), donate_argnums=0)
  return Steps(under_mesh(init_jit, mesh), under_mesh(train_jit, mesh, trim_after_compile=True),
               under_mesh(chunk_jit, mesh, trim_after_compile=True), under_mesh(eval_jit, mesh),
               {"init": init, "train": train, "evaluate": evaluate}, state_sharding, batch_sharding,
               chunk_batch_sharding, eval_batch_sharding, graphdef, param_shapes, mesh)


def chunked(train_step: Callable) -> Callable:
  """`(state, batch) -> (state, metrics)` as `(state, batches, n) -> (state, metrics)` running the first n of the
  S batches stacked on a leading axis, in a device-side loop; metrics come back stacked [S] (rows >= n are zeros).
  One program serves every n <= S. Why: XLA:CPU allocates a program's temp buffer (hundreds of MiB on small
  models) on each call and the kernel zeroes its pages on first touch; a loop pays that, and the dispatch, once
  per call instead of once per step (benchmarks/README.md). The loop body is the same step whatever n or S is."""
  def train_steps(state, batches, n):
    s = jax.tree.leaves(batches)[0].shape[0]
    one = lambda i: jax.tree.map(lambda x: x[i], batches)
    metrics_S = jax.tree.map(lambda m: jnp.zeros((s, *m.shape), m.dtype), jax.eval_shape(train_step, state, one(0))[1])

    def body(i, carry):
      state, metrics_S = carry
      state, metrics = train_step(state, one(i))
      return state, jax.tree.map(lambda acc, m: acc.at[i].set(m), metrics_S, metrics)
    return jax.lax.fori_loop(0, n, body, (state, metrics_S))
  return train_steps


def under_mesh(fn, mesh, trim_after_compile: bool = False):
  """Trace and run `fn` with `mesh` active, so logical sharding constraints inside the model resolve.
  With `trim_after_compile` the first call compiles ahead of running and hands the compiler's freed memory back
  to the OS before the program's temp buffer is allocated, so it does not add to the step's peak RSS (jit then
  reuses the compiled executable)."""
  def call(*args):
    with jax.set_mesh(mesh):
      if trim_after_compile and not call.compiled_once:
        fn.lower(*args).compile()
        hostmem.release_free_memory()
        call.compiled_once = True
      return fn(*args)
  call.jitted, call.compiled_once = fn, False   # jitted: for .lower(...) / cost analysis
  return call
