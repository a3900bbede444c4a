"""The training loop: data → jitted sharded step → metrics, evals, checkpoints; resumable and interruptible.

`train(cfg, run_dir)` writes run_dir/run.json (resolved config, parameter counts, FLOPs, versions, status),
run_dir/metrics.jsonl and Orbax checkpoints. Called again on the same directory it resumes from the latest
checkpoint, including the data-iterator position. Ctrl-C or SIGTERM saves a checkpoint and returns "interrupted".
"""
import dataclasses
import math
import pathlib
import signal
import time

import jax
import numpy as np

from mdm_jax import checkpoint, faults, flops, optim, runio, sharding, step as step_lib
from mdm_jax.config import Config
from mdm_jax.data import pipeline
from mdm_jax.errors import UserError
from mdm_jax.runinfo import run_record

_STEPS_CACHE: dict = {}   # compiled programs by run shape: runs of one shape in a process compile once


@dataclasses.dataclass
class RunResult:
  status: str                 # done | diverged | interrupted
  step: int
  final: dict
  run_dir: pathlib.Path


def shape_key(cfg: Config, mesh) -> tuple:
  """Everything that changes a compiled program (hyper-parameter values do not: they are state arrays)."""
  return (cfg.model, cfg.vocab_size, cfg.data.seq_len, cfg.batch.micro, cfg.batch.accumulation, cfg.diffusion,
          cfg.optim.ema_decay > 0, tuple(mesh.shape.items()), tuple(d.id for d in mesh.devices.flat))


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
  from mdm_jax.data.vocab import MODALITIES
  out, nelbo, tokens = {}, 0.0, 0.0
  by_mod_nelbo, by_mod_tokens = np.zeros(len(MODALITIES)), np.zeros(len(MODALITIES))
  for i, batch in enumerate(b for group in batches.values() for b in group):
    terms = jax.device_get(steps.evaluate(params, put_global(batch, steps.eval_batch_sharding), np.int32(i)))
    nelbo, tokens = nelbo + float(terms.nelbo), tokens + float(terms.tokens)
    by_mod_nelbo += terms.nelbo_by_modality
    by_mod_tokens += terms.tokens_by_modality
  out["eval/loss"] = nelbo / tokens
  out["eval/elbo_bits_per_token"] = out["eval/loss"] / math.log(2)
  for m, name in enumerate(MODALITIES):
    if by_mod_tokens[m] > 0:
      out[f"eval/loss/{name}"] = by_mod_nelbo[m] / by_mod_tokens[m]
  return out


def _mean_metrics(pending: list[dict]) -> dict:
  """Average the per-step device metrics since the last log (one host sync)."""
  from mdm_jax.data.vocab import MODALITIES
  host = jax.device_get(pending)
  out = {k: float(np.mean([m[k] for m in host])) for k in host[0] if np.ndim(host[0][k]) == 0}
  nelbo = np.sum([m["train/nelbo_sum_by_modality"] for m in host], axis=0)
  toks = np.sum([m["train/tokens_by_modality"] for m in host], axis=0)
  for i, name in enumerate(MODALITIES):
    if toks[i] > 0 and np.count_nonzero(toks) > 1:
      out[f"train/loss/{name}"] = float(nelbo[i] / toks[i])
  out["finite"] = bool(all(np.isfinite(m["train/loss"]) for m in host))
  if not out["finite"]:
    out["first_nonfinite"] = next(i for i, m in enumerate(host) if not np.isfinite(m["train/loss"]))
  return out


def _check_same_run(run_dir: pathlib.Path, cfg: Config):
  path = run_dir / runio.RUN_JSON
  if path.exists():
    old = runio.read_json(path)
    if old.get("run_id") not in (None, cfg.fingerprint()):
      raise UserError(str(run_dir), "holds a run with a different config (run.json run_id differs)",
                      "use a new --out directory, or the original config to resume")


def train(cfg: Config, run_dir: str | pathlib.Path, progress: bool = True, mesh=None) -> RunResult:
  run_dir = pathlib.Path(run_dir)
  _check_same_run(run_dir, cfg)
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
  fault_plan = faults.planned(cfg.fingerprint())

  state = steps.init(step_lib.seed_key(cfg.train.seed), optim.hyper_arrays(hyper))
  start = ckpts.latest_step() or 0
  if start:
    target = checkpoint.abstract_like(state, steps.state_sharding)
    state, data_state = ckpts.restore(start, target)
    data_iter.set_state(data_state)
    metrics_log.truncate_after(start)
  record = run_record(cfg, source, hyper, peak, peak_source, mesh)
  record["status"] = "running"
  runio.write_json_atomic(run_dir / runio.RUN_JSON, record)

  log = _Logger(cfg, metrics_log, mesh.size, peak, steps, source.eval)
  status, step_i = "done", start
  pbar = _progress(total, start, progress)
  previous_sigterm = signal.signal(signal.SIGTERM, _raise_interrupt) if _main_thread() else None
  try:
    for step_i in range(start, total):
      batch = put_global(to_micro(next(data_iter), cfg), steps.batch_sharding)
      state, metrics = steps.train(state, batch)
      log.pending.append(metrics)
      done = step_i + 1
      is_last = done == total
      will_save = done % cfg.train.checkpoint_every == 0 or is_last
      if done % cfg.train.log_every == 0 or will_save:   # metrics are flushed before every save: no NaN saved
        if not log.flush(done, state, evaluate_now=done % cfg.train.eval_every == 0 or is_last):
          status, record["diverged_at"] = "diverged", log.diverged_at
          break
        pbar.set_postfix(loss=f"{log.last['train/loss']:.3f}", refresh=False)
      if will_save:
        ckpts.save(done, state, data_iter.get_state(), force=is_last)
      pbar.update(1)
      if done in fault_plan:
        state = faults.inject(fault_plan[done], state)
  except KeyboardInterrupt:
    status = "interrupted"
    if not any(x.is_deleted() for x in jax.tree.leaves(state)):   # else interrupted mid-dispatch: keep last save
      done = int(jax.device_get(state["step"]))
      if log.pending and log.flush(done, state, evaluate_now=False):
        ckpts.save(done, state, data_iter.get_state(), force=True)
  finally:
    pbar.close()
    ckpts.wait()
    ckpts.close()
    if previous_sigterm is not None:
      signal.signal(signal.SIGTERM, previous_sigterm)
  final_step = log.last.get("step", start)
  record.update(status=status, final=log.last, wall_time=log.wall_time(), step=final_step)
  runio.write_json_atomic(run_dir / runio.RUN_JSON, record)
  return RunResult(status, final_step, log.last, run_dir)


class _Logger:
  """Averages per-step device metrics between logs, adds throughput and evals, appends JSONL lines."""

  def __init__(self, cfg: Config, metrics_log, n_devices: int, peak: float, steps, eval_batches):
    self.cfg, self.metrics_log, self.steps, self.eval_batches = cfg, metrics_log, steps, eval_batches
    self.flops_per_token = flops.train_flops_per_token(cfg)
    self.n_devices, self.peak = n_devices, peak
    self.pending, self.last, self.diverged_at = [], {}, None
    self.wall0, self.t_log = time.time(), time.perf_counter()

  def wall_time(self) -> float:
    return time.time() - self.wall0

  def flush(self, done: int, state, evaluate_now: bool) -> bool:
    """Write one line for the steps since the last flush; False (and nothing written) if the loss went non-finite."""
    row = _mean_metrics(self.pending)
    if not row.pop("finite"):
      self.diverged_at = done - len(self.pending) + row.pop("first_nonfinite") + 1
      self.last = {"step": done, **{k: v for k, v in row.items() if not k.endswith("_by_modality")}}
      return False
    tokens_per_step = self.cfg.tokens_per_step
    tokens_per_s = len(self.pending) * tokens_per_step / (time.perf_counter() - self.t_log)
    row.update({"step": done, "tokens": done * tokens_per_step, "flops": done * tokens_per_step *
                self.flops_per_token, "wall_time": self.wall_time(), "throughput/tokens_per_s": tokens_per_s,
                "throughput/model_flops": tokens_per_s * self.flops_per_token,
                "throughput/mfu": flops.mfu(self.flops_per_token, tokens_per_s, self.n_devices, self.peak)})
    if evaluate_now:
      row.update(evaluate(self.steps, state["params"], self.eval_batches))
    row = {k: v for k, v in row.items() if not k.endswith("_by_modality")}
    self.metrics_log.append(row)
    self.last, self.pending, self.t_log = row, [], time.perf_counter()
    return True


def _raise_interrupt(signum, frame):
  raise KeyboardInterrupt


def _main_thread() -> bool:
  import threading
  return threading.current_thread() is threading.main_thread()


def _progress(total: int, start: int, enabled: bool):
  from tqdm.auto import tqdm
  return tqdm(total=total, initial=start, disable=not enabled, unit="step", dynamic_ncols=True)
