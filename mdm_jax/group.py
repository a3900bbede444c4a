"""Train a group of same-shape runs as one compiled program (jax.vmap over a leading run axis), then write every
run's own directory exactly as `train` does: run.json, metrics.jsonl and Orbax checkpoints of the unstacked state.

Runs may be grouped when they differ only in values that live in the train state or the data stream: the seed,
scalar optimizer hyper-parameters (LR, betas, ε, WD, clip, warmup, schedule kind), the SDE rule and the mixture.
`group_key` is equal exactly for such runs. Each member keeps its own data iterator, eval batches, logger,
divergence status and fault plan; a diverged member stops logging and saving while the others go on. Because
the per-run checkpoints are the ones `train` writes, a member can later be resumed alone or in another group.
"""
import dataclasses
import hashlib
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from mdm_jax import checkpoint, faults, flops, optim, runio, sharding, step as step_lib
from mdm_jax.config import Config
from mdm_jax.data import pipeline
from mdm_jax.loop import chunk_length, per_step, stack_batches
from mdm_jax.runinfo import run_record
from mdm_jax.runlog import (RunFiles, RunLogger, check_run_dir, eval_summary, is_writer, note_fallbacks,
                            progress_bar, restore_sigterm, sigterm_to_interrupt)
from mdm_jax.train import RunResult, compiled_steps, put_global, shape_key, to_micro

# Dotted config fields that may differ inside a group: they only change state arrays or the data stream.
VARYING_FIELDS = ("optim.lr", "optim.b1", "optim.b2", "optim.eps", "optim.weight_decay", "optim.grad_clip",
                  "optim.min_lr_ratio", "optim.warmup", "optim.decay_fraction", "optim.lr_schedule",
                  "optim.weight_decay_convention", "train.seed", "train.peak_flops", "data.mixture", "sde",
                  "output_dir")
_GROUP_CACHE: dict = {}


def group_key(cfg: Config) -> str:
  """Equal for runs that can share one vmapped program and one loop (same shapes, steps and cadences)."""
  d = cfg.to_dict()
  for dotted in VARYING_FIELDS:
    *parents, leaf = dotted.split(".")
    node = d
    for p in parents:
      node = node.get(p, {})
    node.pop(leaf, None)
  d["optim"].pop("ema_decay")   # a state value; only whether EMA is on changes the program
  d["ema_on"] = cfg.optim.ema_decay > 0
  return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


@dataclasses.dataclass
class _Vmapped:
  init: object
  train: object        # (state, batches_SxkxKxBxL, n) -> (state, metrics [S, k]): `step.chunked` of the vmapped step
  evaluate: object
  unstack: object
  stack: object
  state_sharding: object
  batch_sharding: object
  eval_batch_sharding: object


def _lead(shardings, mesh):
  """The same placement with an unsharded leading run axis (the 'run' logical axis is replicated)."""
  return jax.tree.map(lambda s: NamedSharding(mesh, P(None, *s.spec)), shardings)


def vmapped_steps(cfg: Config, mesh, k: int) -> _Vmapped:
  """jit(vmap(...)) of the un-jitted step functions for a group of k runs; cached per run shape and k."""
  key = (shape_key(cfg, mesh), k)
  if key in _GROUP_CACHE:
    return _GROUP_CACHE[key]
  steps = compiled_steps(cfg, mesh)
  raw, rep = steps.raw, NamedSharding(mesh, P())
  state_s, batch_s = _lead(steps.state_sharding, mesh), _lead(steps.chunk_batch_sharding, mesh)
  eval_s = _lead(steps.eval_batch_sharding, mesh)
  fns = _Vmapped(
      init=jax.jit(jax.vmap(raw["init"]), in_shardings=(rep, rep), out_shardings=state_s),
      train=jax.jit(step_lib.chunked(jax.vmap(raw["train"])), in_shardings=(state_s, batch_s, rep),
                    out_shardings=(state_s, rep), donate_argnums=0),
      evaluate=jax.jit(jax.vmap(raw["evaluate"], in_axes=(0, 0, None)),
                       in_shardings=(state_s["params"], eval_s, rep), out_shardings=rep),
      unstack=jax.jit(lambda s, i: jax.tree.map(lambda x: x[i], s), out_shardings=steps.state_sharding),
      stack=jax.jit(lambda ss: jax.tree.map(lambda *x: jnp.stack(x), *ss), out_shardings=state_s),
      state_sharding=state_s, batch_sharding=batch_s, eval_batch_sharding=eval_s)
  for name in ("init", "train", "evaluate", "unstack", "stack"):
    setattr(fns, name, step_lib.under_mesh(getattr(fns, name), mesh, trim_after_compile=name == "train"))
  _GROUP_CACHE[key] = fns
  return fns


def train_group(cfgs: list[Config], run_dirs, progress: bool = False, mesh=None) -> list[RunResult]:
  """Train same-`group_key` runs together; returns one RunResult per run, in order. Resumes from checkpoints
  (each member from its newest readable one): members whose start steps differ are trained as separate sub-groups
  (one per start step)."""
  run_dirs = [pathlib.Path(d) for d in run_dirs]
  if len(cfgs) != len(run_dirs) or not cfgs:
    raise ValueError("train_group needs one run directory per config")
  keys = {group_key(c) for c in cfgs}
  if len(keys) != 1:
    raise ValueError(f"configs of a group must share group_key, got {len(keys)} different keys")
  mesh = mesh or sharding.make_mesh(cfgs[0].mesh)
  sharding.check_fits(cfgs[0], mesh)
  for cfg, run_dir in zip(cfgs, run_dirs):
    check_run_dir(run_dir, cfg)
  steps = compiled_steps(cfgs[0], mesh)
  with jax.set_mesh(mesh):
    one = jax.eval_shape(steps.init.jitted, step_lib.seed_key(0), optim.hyper_arrays(optim.hyperparams(cfgs[0])))
  target = checkpoint.abstract_like(one, steps.state_sharding)   # a member's state
  resumes = [_restore_latest(c, d, target) for c, d in zip(cfgs, run_dirs)]
  results: list[RunResult | None] = [None] * len(cfgs)
  for start in sorted({r.start for r in resumes}):
    members = [i for i, r in enumerate(resumes) if r.start == start]
    out = _train_stacked([cfgs[i] for i in members], [run_dirs[i] for i in members], start, mesh, progress,
                         [resumes[i] for i in members])
    for i, r in zip(members, out):
      results[i] = r
  return results


@dataclasses.dataclass
class _Resume:
  start: int                # 0: from scratch
  state: object = None      # the member's restored state (start > 0)
  data_state: dict | None = None
  fallbacks: list = dataclasses.field(default_factory=list)


def _restore_latest(cfg: Config, run_dir: pathlib.Path, target) -> _Resume:
  if not (run_dir / "checkpoints").is_dir():
    return _Resume(0)
  ckpts = checkpoint.Checkpoints(run_dir, cfg.train.keep_checkpoints, cfg.train.checkpoint_every)
  try:
    start, state, data_state, fallbacks = ckpts.restore_latest(target)
  finally:
    ckpts.close()
  return _Resume(start or 0, state, data_state, fallbacks)


def _train_stacked(cfgs, run_dirs, start: int, mesh, progress: bool, resumes: list[_Resume]) -> list[RunResult]:
  k, cfg0 = len(cfgs), cfgs[0]
  fns = vmapped_steps(cfg0, mesh, k)
  sources = [pipeline.DataSource(c) for c in cfgs]
  for d in run_dirs:
    d.mkdir(parents=True, exist_ok=True)
  hypers = [optim.hyperparams(c) for c in cfgs]
  peak, peak_source = flops.peak_flops_per_device(cfg0.train.peak_flops)
  total, every = cfg0.total_steps, cfg0.train
  ckpts = [checkpoint.Checkpoints(d, c.train.keep_checkpoints, c.train.checkpoint_every)
           for c, d in zip(cfgs, run_dirs)]
  iters = [s.iterator() for s in sources]
  plans = [faults.planned(c.fingerprint(), d) for c, d in zip(cfgs, run_dirs)]
  evals = [[b for group in s.eval.values() for b in group] for s in sources]
  if len({len(e) for e in evals}) != 1:
    raise ValueError("members of a group must have the same number of eval batches")

  hyper_k = jax.tree.map(lambda *x: jnp.stack(x), *[optim.hyper_arrays(h) for h in hypers])
  state = fns.init(jnp.stack([step_lib.seed_key(c.train.seed) for c in cfgs]), hyper_k)
  if start:
    state = fns.stack([r.state for r in resumes])
    for it, r in zip(iters, resumes):
      it.set_state(r.data_state)
  logs, files = [], []
  for c, d, src, h, r in zip(cfgs, run_dirs, sources, hypers, resumes):
    metrics_log = runio.MetricsLog(d / runio.METRICS)
    if is_writer():
      metrics_log.truncate_after(start)   # lines after the checkpoint (or, from scratch, all) are redone
    logs.append(RunLogger(c, metrics_log, mesh.size, peak))
    files.append(RunFiles(d, run_record(c, src, h, peak, peak_source, mesh)))
    note_fallbacks(files[-1], r.fallbacks, start)
    files[-1].write(status="running", resumed_from=start or None, group_size=k)

  status, alive = ["done"] * k, [True] * k
  pending: list = []
  pbar = progress_bar(total, start, progress)
  previous_sigterm = sigterm_to_interrupt()
  event_steps = [f.step for plan in plans for f in plan.faults]
  done, chunk_start, data_at_chunk_start = start, start, None

  def evaluate_all() -> list[dict]:
    terms = [jax.device_get(fns.evaluate(state["params"], put_global(_stack(batches), fns.eval_batch_sharding),
                                         np.int32(j))) for j, batches in enumerate(zip(*evals))]
    return [eval_summary([jax.tree.map(lambda x: x[i], t) for t in terms]) for i in range(k)]

  try:
    while done < total:
      n = chunk_length(done, total, every, event_steps)
      chunk_start, data_at_chunk_start = done, [it.get_state() for it in iters]   # for an interrupt before it ran
      batches = stack_batches([_stack([to_micro(next(it), c) for it, c in zip(iters, cfgs)]) for _ in range(n)],
                              every.steps_per_call)
      state, metrics = fns.train(state, put_global(batches, fns.batch_sharding), np.int32(n))
      pending.append((metrics, n))
      done += n
      is_last = done == total
      will_save = done % every.checkpoint_every == 0 or is_last
      if done % every.log_every == 0 or will_save:
        host, cached = per_step(jax.device_get(pending)), {}
        evaluate_now = done % every.eval_every == 0 or is_last
        for i in (i for i in range(k) if alive[i]):
          rows = [jax.tree.map(lambda x: x[i], m) for m in host]
          eval_i = (lambda i=i: cached.setdefault("rows", evaluate_all())[i]) if evaluate_now else None
          if not logs[i].flush(done, rows, eval_i):
            status[i], alive[i] = "diverged", False
        pending = []
      if will_save:
        for i in (i for i in range(k) if alive[i]):
          ckpts[i].save(done, fns.unstack(state, np.int32(i)), iters[i].get_state(), force=is_last)
      pbar.update(n)
      for i in (i for i in range(k) if alive[i]):
        for fault in plans[i].at(done):
          state = faults.inject(fault, state, plans[i], ckpts[i], member=i)
      if not any(alive):
        break
  except KeyboardInterrupt:
    status = ["interrupted" if a else s for a, s in zip(alive, status)]
    if not any(x.is_deleted() for x in jax.tree.leaves(state)):
      done = int(jax.device_get(state["step"])[0])
      data_states = data_at_chunk_start if done == chunk_start else [it.get_state() for it in iters]
      host = per_step(jax.device_get(pending))
      for i in (i for i in range(k) if alive[i]):
        if host and logs[i].flush(done, [jax.tree.map(lambda x: x[i], m) for m in host], None):
          ckpts[i].save(done, fns.unstack(state, np.int32(i)), data_states[i], force=True)
  finally:
    pbar.close()
    restore_sigterm(previous_sigterm)
    _close_all(ckpts)   # a failed async save of any member raises here instead of vanishing
  results = []
  for i in range(k):
    final = logs[i].final()
    final_step = final.get("step", start)
    files[i].write(status=status[i], final=final, wall_time=logs[i].wall_time(), step=final_step,
                   **logs[i].divergence())
    if status[i] == "diverged":
      runio.log_line(run_dirs[i], f"diverged at step {logs[i].diverged_at}: {logs[i].diverged_reason}")
    results.append(RunResult(status[i], final_step, final, run_dirs[i]))
  return results


def _stack(batches: list[dict]) -> dict:
  return {name: np.stack([b[name] for b in batches]) for name in batches[0]}


def _close_all(ckpts) -> None:
  """Close every member's checkpoints, then raise the first save error (if any)."""
  errors = []
  for ck in ckpts:
    try:
      ck.close()
    except checkpoint.CheckpointSaveError as e:
      errors.append(e)
  if errors:
    raise errors[0]
