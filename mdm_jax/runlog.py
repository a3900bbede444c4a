"""What every trainer (one run, or a vmapped group of runs) writes into a run directory, in one place.

`RunLogger` turns per-step metrics into metrics.jsonl lines (averages since the last log, throughput, MFU, evals);
`RunFiles` owns run.json. Both write only on JAX process 0, so a multi-process (jax.distributed) run produces the
same files as a single-process one. `train.py` and `group.py` share them, so a run trained inside a group is
indistinguishable on disk from one trained alone.
"""
import logging
import math
import pathlib
import signal
import threading
import time
from typing import Callable

import numpy as np

from mdm_jax import flops, model, runio
from mdm_jax.config import Config
from mdm_jax.errors import UserError


def is_writer() -> bool:
  """Only process 0 of a multi-process job writes run files (all processes see the same metrics)."""
  import jax
  return jax.process_index() == 0


def mean_metrics(host: list[dict]) -> dict:
  """Average host-side per-step metrics since the last log."""
  from mdm_jax.data.vocab import MODALITIES
  out = {k: float(np.mean([m[k] for m in host])) for k in host[0] if np.ndim(host[0][k]) == 0}
  nelbo = np.sum([m["train/nelbo_sum_by_modality"] for m in host], axis=0)
  toks = np.sum([m["train/tokens_by_modality"] for m in host], axis=0)
  for i, name in enumerate(MODALITIES):
    if toks[i] > 0 and np.count_nonzero(toks) > 1:
      out[f"train/loss/{name}"] = float(nelbo[i] / toks[i])
  return out


def first_divergence(host: list[dict], max_grad_norm: float = 0.0) -> tuple[int, str] | None:
  """(index in `host`, reason) of the first step whose loss is NaN/inf or whose gradient norm is non-finite or
  above `max_grad_norm` (0: no norm limit); None if every step is healthy."""
  for i, m in enumerate(host):
    loss, norm = float(m["train/loss"]), float(m.get("optim/grad_norm", 0.0))
    if not np.isfinite(loss):
      return i, f"non-finite loss ({loss})"
    if not np.isfinite(norm):
      return i, f"non-finite gradient norm ({norm})"
    if max_grad_norm and norm > max_grad_norm:
      return i, f"gradient norm {norm:.4g} > train.max_grad_norm={max_grad_norm:g}"
  return None


def eval_summary(terms: list) -> dict:
  """Validation NELBO overall and per modality (nats/token and bits/token) from host LossTerms of every batch."""
  from mdm_jax.data.vocab import MODALITIES
  nelbo = sum(float(t.nelbo) for t in terms)
  tokens = sum(float(t.tokens) for t in terms)
  by_mod_nelbo = np.sum([np.asarray(t.nelbo_by_modality) for t in terms], axis=0)
  by_mod_tokens = np.sum([np.asarray(t.tokens_by_modality) for t in terms], axis=0)
  out = {"eval/loss": nelbo / tokens}
  out["eval/elbo_bits_per_token"] = out["eval/loss"] / math.log(2)
  for m, name in enumerate(MODALITIES):
    if by_mod_tokens[m] > 0:
      out[f"eval/loss/{name}"] = float(by_mod_nelbo[m] / by_mod_tokens[m])
  return out


def check_run_dir(run_dir: pathlib.Path, cfg: Config):
  """The output directory is usable for this config: a directory (or absent), whose run.json (if any) is readable
  and belongs to the same config, and whose checkpoints/ is a checkpoint directory holding this mdm-lab's parameter
  layout. UserError naming the path."""
  from mdm_jax import checkpoint
  if run_dir.exists() and not run_dir.is_dir():
    raise UserError(str(run_dir), "exists and is not a directory", "give a new or an existing run directory as --out")
  path, old = run_dir / runio.RUN_JSON, None
  if path.exists():
    try:
      old = runio.read_json(path)
    except (OSError, UnicodeDecodeError, ValueError) as e:
      raise UserError(str(path), f"unreadable ({type(e).__name__}: {str(e).splitlines()[0][:120]})",
                      "restore it or remove the run directory") from None
    if not isinstance(old, dict) or old.get("run_id") not in (None, cfg.fingerprint()):
      raise UserError(str(run_dir), "holds a run with a different config (run.json run_id differs)",
                      "use a new --out directory, or the original config to resume")
  if any(checkpoint.check_dir(run_dir).glob("*")) and old is not None:
    model.check_param_layout(old, path)


def note_fallbacks(files: "RunFiles", fallbacks: list[dict], start: int) -> None:
  """Record checkpoints that could not be restored (run.json "restore_fallbacks", kept across attempts) and say
  so in RUN_DIR/run.log and the Python log."""
  old = runio.read_json(files.path).get("restore_fallbacks") or [] if files.path.exists() else []
  if old or fallbacks:
    files.record["restore_fallbacks"] = old + [dict(f, resumed_from=start) for f in fallbacks]
  for f in fallbacks:
    message = (f"checkpoint at step {f['step']} unreadable ({f['error']}); moved to {f['moved_to']}; "
               f"resuming from step {start}")
    logging.warning("%s: %s", files.path.parent, message)
    if is_writer():
      runio.log_line(files.path.parent, message)


class RunFiles:
  """run.json of one run: the record from `runinfo.run_record`, rewritten atomically at start and at the end."""

  def __init__(self, run_dir: pathlib.Path, record: dict):
    self.path, self.record = pathlib.Path(run_dir) / runio.RUN_JSON, record

  def write(self, **updates):
    self.record.update(updates)
    if is_writer():
      runio.write_json_atomic(self.path, self.record)


class RunLogger:
  """Averages per-step metrics between logs, adds throughput and evals, appends JSONL lines (process 0)."""

  def __init__(self, cfg: Config, metrics_log: runio.MetricsLog, n_devices: int, peak: float):
    self.cfg, self.metrics_log = cfg, metrics_log
    self.flops_per_token = flops.train_flops_per_token(cfg)
    self.n_devices, self.peak = n_devices, peak
    self.pending, self.last, self.diverged_at, self.diverged_reason = [], {}, None, None
    self.wall0, self.t_log = time.time(), time.perf_counter()

  def wall_time(self) -> float:
    return time.time() - self.wall0

  def final(self) -> dict:
    """The last logged (healthy) line: this session's, or the one on disk when a run resumed after its final save
    (a worker killed before run.json said done) or diverged before logging anything in this session."""
    if not self.last:
      self.last = (runio.read_metrics(self.metrics_log.path) or [{}])[-1]
    return self.last

  def divergence(self) -> dict:
    """What run.json records about a divergence (all None for a healthy run)."""
    return {"diverged_at": self.diverged_at, "diverged_reason": self.diverged_reason}

  def flush(self, done: int, host_pending: list[dict], evaluate: Callable[[], dict] | None) -> bool:
    """One line for the steps since the last flush; False (nothing written) if a step diverged: its loss went
    non-finite or its gradient norm exploded. The last good line stays `final`; the step and reason are kept.

    `evaluate` (called only when every step was healthy) returns the eval/ keys to add on this line, or is None.
    """
    bad = first_divergence(host_pending, self.cfg.train.max_grad_norm)
    if bad is not None:
      self.diverged_at, self.diverged_reason = done - len(host_pending) + bad[0] + 1, bad[1]
      self.pending = []
      return False
    row = mean_metrics(host_pending)
    tokens_per_step = self.cfg.tokens_per_step
    tokens_per_s = len(host_pending) * tokens_per_step / (time.perf_counter() - self.t_log)
    row.update({"step": done, "tokens": done * tokens_per_step, "flops": done * tokens_per_step *
                self.flops_per_token, "wall_time": self.wall_time(), "throughput/tokens_per_s": tokens_per_s,
                "throughput/model_flops": tokens_per_s * self.flops_per_token,
                "throughput/mfu": flops.mfu(self.flops_per_token, tokens_per_s, self.n_devices, self.peak)})
    if evaluate is not None:
      row.update(evaluate())
    row = {k: v for k, v in row.items() if not k.endswith("_by_modality")}
    if is_writer():
      self.metrics_log.append(row)
    self.last, self.pending, self.t_log = row, [], time.perf_counter()
    return True


def progress_bar(total: int, start: int, enabled: bool):
  from tqdm.auto import tqdm
  return tqdm(total=total, initial=start, disable=not (enabled and is_writer()), unit="step", dynamic_ncols=True)


def sigterm_to_interrupt():
  """While training, SIGTERM raises KeyboardInterrupt (checkpoint, status `interrupted`); returns the previous
  handler for `restore_sigterm`, or None off the main thread (where signal handlers cannot be set)."""
  if threading.current_thread() is not threading.main_thread():
    return None
  return signal.signal(signal.SIGTERM, _raise_interrupt)


def restore_sigterm(previous) -> None:
  if previous is not None:
    signal.signal(signal.SIGTERM, previous)


def _raise_interrupt(signum, frame):
  raise KeyboardInterrupt
