"""The training loop: data → jitted sharded step → metrics, evals, checkpoints; resumable and interruptible.

`train(cfg, run_dir)` writes run_dir/run.json (resolved config, parameter counts, FLOPs, versions, status),
run_dir/metrics.jsonl and Orbax checkpoints. Called again on the same directory it resumes from the latest
checkpoint, including the data-iterator position. Ctrl-C or SIGTERM saves a checkpoint and returns "interrupted".
"""
import dataclasses
import pathlib

import jax
import numpy as np

from mdm_jax import checkpoint, faults, flops, optim, runio, sharding, step as step_lib
from mdm_jax.config import Config
from mdm_jax.data import pipeline
from mdm_jax.loop import chunk_length, per_step, stack_batches
from mdm_jax.runinfo import run_record
from mdm_jax.runlog import (RunFiles, RunLogger, check_run_dir, eval_summary, is_writer, note_fallbacks,
                            progress_bar, restore_sigterm, sigterm_to_interrupt)

_STEPS_CACHE: dict = {}   # compiled programs by run shape: runs of one shape in a process compile once


@dataclasses.dataclass
class RunResult:
  status: str                 # done | diverged | interrupted
  step: int
  final: dict
  run_dir: pathlib.Path


def shape_key(cfg: Config, mesh) -> tuple:
  """Everything that changes a compiled program (hyper-parameter values do not: they are state arrays)."""
  from mdm_jax.parametrization import multipliers   # forward multipliers and init stds are compiled in
  return (cfg.model, cfg.vocab_size, cfg.data.seq_len, cfg.batch.micro, cfg.batch.accumulation, cfg.diffusion,
          cfg.train.steps_per_call, cfg.optim.ema_decay > 0, multipliers(cfg), tuple(mesh.shape.items()),
          tuple(d.id for d in mesh.devices.flat))


def compiled_steps(cfg: Config, mesh) -> step_lib.Steps:
  key = shape_key(cfg, mesh)
  if key not in _STEPS_CACHE:
    _STEPS_CACHE[key] = step_lib.build(cfg, mesh)
  return _STEPS_CACHE[key]


def to_micro(batch: dict, cfg: Config) -> dict:
  """[B_logical, L] -> [K, B_micro, L]: K micro-steps of gradient accumulation."""
  k = cfg.batch.accumulation
  return {name: x.reshape(k, x.shape[0] // k, *x.shape[1:]) for name, x in batch.items()}


def put_global(batch: dict, sharding) -> dict:
  """Host batch (identical on every process) -> global sharded arrays; each process fills its own devices."""
  return {k: jax.make_array_from_callback(x.shape, sharding, lambda idx, x=x: x[idx]) for k, x in batch.items()}

def evaluate(steps: step_lib.Steps, params, batches: dict[str, list[dict]]) -> dict:
  """Validation NELBO per source and per modality (nats/token and bits/token)."""
  terms = [jax.device_get(steps.evaluate(params, put_global(batch, steps.eval_batch_sharding), np.int32(i)))
           for i, batch in enumerate(b for group in batches.values() for b in group)]
  return eval_summary(terms)


def train(cfg: Config, run_dir: str | pathlib.Path, progress: bool = True, mesh=None) -> RunResult:
  run_dir = pathlib.Path(run_dir)
  check_run_dir(run_dir, cfg)
  mesh = mesh or sharding.make_mesh(cfg.mesh)
  sharding.check_fits(cfg, mesh)
  source = pipeline.DataSource(cfg)
  run_dir.mkdir(parents=True, exist_ok=True)   # only once the config and data are known to be good
  steps = compiled_steps(cfg, mesh)
  hyper = optim.hyperparams(cfg)
  total = cfg.total_steps
  peak, peak_source = flops.peak_flops_per_device(cfg.train.peak_flops)
  ckpts = checkpoint.Checkpoints(run_dir, cfg.train.keep_checkpoints, cfg.train.checkpoint_every)
  metrics_log = runio.MetricsLog(run_dir / runio.METRICS)
  data_iter = source.iterator()
  fault_plan = faults.planned(cfg.fingerprint(), run_dir)

  state = steps.init(step_lib.seed_key(cfg.train.seed), optim.hyper_arrays(hyper))
  start, restored, data_state, fallbacks = ckpts.restore_latest(checkpoint.abstract_like(state, steps.state_sharding))
  start = start or 0
  if start:
    state = restored
    data_iter.set_state(data_state)
  if is_writer():
    metrics_log.truncate_after(start)   # lines logged after the checkpoint (or, from scratch, all) are redone
  files = RunFiles(run_dir, run_record(cfg, source, hyper, peak, peak_source, mesh))
  note_fallbacks(files, fallbacks, start)
  files.write(status="running", resumed_from=start or None)

  log = RunLogger(cfg, metrics_log, mesh.size, peak)
  status, done = "done", start
  pbar = progress_bar(total, start, progress)
  previous_sigterm = sigterm_to_interrupt()
  fault_steps = [f.step for f in fault_plan.faults]
  chunk_start, data_at_chunk_start = done, None
  try:
    while done < total:
      n = chunk_length(done, total, cfg.train, fault_steps)
      chunk_start, data_at_chunk_start = done, data_iter.get_state()   # for an interrupt before the chunk ran
      batches = stack_batches([to_micro(next(data_iter), cfg) for _ in range(n)], cfg.train.steps_per_call)
      state, metrics = steps.train_chunk(state, put_global(batches, steps.chunk_batch_sharding), np.int32(n))
      log.pending.append((metrics, n))
      done += n
      is_last = done == total
      will_save = done % cfg.train.checkpoint_every == 0 or is_last
      if done % cfg.train.log_every == 0 or will_save:   # metrics are flushed before every save: no NaN saved
        evaluate_now = done % cfg.train.eval_every == 0 or is_last
        evaluate_fn = (lambda: evaluate(steps, state["params"], source.eval)) if evaluate_now else None
        if not log.flush(done, per_step(jax.device_get(log.pending)), evaluate_fn):
          status = "diverged"
          break
        pbar.set_postfix(loss=f"{log.last['train/loss']:.3f}", refresh=False)
      if will_save:
        ckpts.save(done, state, data_iter.get_state(), force=is_last)
      pbar.update(n)
      for fault in fault_plan.at(done):
        state = faults.inject(fault, state, fault_plan, ckpts)
  except KeyboardInterrupt:
    status = "interrupted"
    if not any(x.is_deleted() for x in jax.tree.leaves(state)):   # else interrupted mid-dispatch: keep last save
      done = int(jax.device_get(state["step"]))
      data_state = data_at_chunk_start if done == chunk_start else data_iter.get_state()
      if log.pending and log.flush(done, per_step(jax.device_get(log.pending)), None):
        ckpts.save(done, state, data_state, force=True)
  finally:
    pbar.close()
    restore_sigterm(previous_sigterm)
    ckpts.close()   # waits for the last save: a failed async save raises here instead of vanishing
  final = log.final()
  final_step = final.get("step", start)
  files.write(status=status, final=final, wall_time=log.wall_time(), step=final_step, **log.divergence())
  if status == "diverged":
    runio.log_line(run_dir, f"diverged at step {log.diverged_at}: {log.diverged_reason}; kept the last good "
                   f"metrics (step {final_step}) and checkpoints")
  return RunResult(status, final_step, final, run_dir)
