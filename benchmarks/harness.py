"""Bracketed, interleaved timing of train-step implementations, each in its own long-lived process.

Method (shared/docs/CPU_PERF.md): absolute times drift ±20 % on these shared machines, so each timed block of a
candidate sits between two blocks of the reference (ref, cand1, ref, cand2, ref, ...) and the ratio of step times is
taken per round; the report is the median over rounds. Each implementation runs in its own spawned process, so
JAX and torch never share a process or thread pools. Background load is read from /proc/stat per block: a block
during which other work took more than `max_other_cores` is discarded and retried, each attempt after waiting (a
bounded time) for a quiet machine; if every attempt was loaded the least loaded is kept and counted as such.

Top-level imports are standard library only: the parent never loads torch or jax (numpy only for the ceiling).
"""

import dataclasses
import importlib
import multiprocessing as mp
import os
import resource
import statistics
import sys
import time
import traceback

_MATMUL_SIZES = (1024, 1536, 2048)


def train_flops_per_token(d: int, L: int, H: int, ff: int, V: int, seq: int, head_rows: float = 1.0) -> float:
  """FALLBACK: METHOD.md §6.1 non-causal train FLOPs per token (MHA, SwiGLU, untied head, no cond).
  `head_rows` < 1 counts the head on that fraction of the tokens only: the useful FLOPs of a loss that scores
  masked positions only (the model FLOPs count every row).

  Replace with mdm_jax.flops once it exists so the lab has one FLOP function (tests/benchmarks checks this one).
  """
  dh = d // H
  dense = L * (2 * d * 3 * H * dh + 2 * H * dh * d + 2 * 3 * d * ff)
  attn = L * 4 * seq * H * dh
  head = 2 * d * V * head_rows
  return 3.0 * (dense + attn + head)


# --------------------------------------------------------------------------- measurements inside one process


def cpu_busy_seconds() -> float:
  """Machine-wide non-idle CPU time (all cores) from /proc/stat; steal counts as lost to others."""
  with open("/proc/stat") as f:
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in f.readline().split()[1:9])
  return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def self_cpu_seconds() -> float:
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


def vm_hwm_mb() -> float:
  """Peak resident set size of this process (VmHWM) in MiB."""
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith("VmHWM:"):
        return int(line.split()[1]) / 1024
  raise RuntimeError("no VmHWM in /proc/self/status")


def reset_hwm() -> bool:
  """Resets VmHWM to the current RSS (Linux >= 4.0), so a later read gives the peak of what ran since."""
  try:
    with open("/proc/self/clear_refs", "w") as f:
      f.write("5")
    return True
  except OSError:
    return False


def _matmul_runner(lib: str, n: int):
  """A zero-argument callable doing one blocking fp32 n×n matmul with `lib`."""
  if lib == "numpy":
    import numpy as np
    a, b = (np.random.default_rng(i).standard_normal((n, n), dtype=np.float32) for i in (0, 1))
    return lambda: a @ b
  if lib == "torch":
    import torch
    a, b = torch.randn(n, n), torch.randn(n, n)
    return lambda: torch.mm(a, b)
  if lib == "jax":
    import jax
    import jax.numpy as jnp
    a, b = (jax.random.normal(jax.random.key(i), (n, n), jnp.float32) for i in (0, 1))
    mm = jax.jit(jnp.dot)
    return lambda: mm(a, b).block_until_ready()
  raise ValueError(f"unknown matmul library {lib!r}")


def matmul_peak(lib: str, repeats: int = 5) -> dict:
  """Best fp32 matmul FLOP/s over n in 1024..2048 (best-of `repeats` after a warm-up call), and the other work
  (cores) seen meanwhile: a loaded machine gives a low ceiling, hence an inflated MFU."""
  best = 0.0
  busy0, self0, t0 = cpu_busy_seconds(), self_cpu_seconds(), time.perf_counter()
  for n in _MATMUL_SIZES:
    run = _matmul_runner(lib, n)
    run()
    for _ in range(repeats):
      t_start = time.perf_counter()
      run()
      best = max(best, 2.0 * n**3 / (time.perf_counter() - t_start))
  other = (cpu_busy_seconds() - busy0 - (self_cpu_seconds() - self0)) / (time.perf_counter() - t0)
  return {"flops_per_s": best, "other_cores": max(other, 0.0)}


# --------------------------------------------------------------------------- the worker process


@dataclasses.dataclass(frozen=True)
class ImplSpec:
  """How a worker builds an implementation: `module.function(**kwargs) -> (step_fn, state)`; `lib` for its peak."""
  name: str
  module: str
  function: str
  kwargs: dict
  lib: str
  env: dict = dataclasses.field(default_factory=dict)   # set in the worker's environment at spawn (e.g. glibc tunables)


def sleep_step(step_s: float, steps_per_call: int = 1):
  """A calibration implementation: steps paced at `step_s` of wall time, like a metronome, so that wake-up delays on
  a busy machine do not add up over a block (checks the harness arithmetic, not the CPU); each call runs
  `steps_per_call` of them."""

  def step_fn(deadline: float) -> float:
    call_s, now = step_s * steps_per_call, time.perf_counter()
    deadline = (deadline if now - deadline < call_s else now) + call_s  # late by a call or more: a new block
    time.sleep(max(0.0, deadline - time.perf_counter()))
    return deadline

  step_fn.steps_per_call = steps_per_call
  return step_fn, 0.0


def _worker_main(conn, spec: ImplSpec) -> None:
  try:
    step_fn, state = getattr(importlib.import_module(spec.module), spec.function)(**spec.kwargs)
  except ImportError as e:
    conn.send(("skipped", f"{type(e).__name__}: {e}"))
    return
  except Exception:  # any build failure is reported, not raised in a child nobody watches
    conn.send(("error", traceback.format_exc(limit=5)))
    return
  conn.send(("ok", None))
  per_call = getattr(step_fn, "steps_per_call", 1)   # train steps one call runs (the lab's trainer runs several)
  while True:
    cmd, arg = conn.recv()
    try:
      if cmd == "steps":  # untimed calls (compile and warm up); seconds per call
        t0 = time.perf_counter()
        for _ in range(arg):
          state = step_fn(state)
        conn.send(("ok", (time.perf_counter() - t0) / arg))
      elif cmd == "block":
        busy0, self0, t0 = cpu_busy_seconds(), self_cpu_seconds(), time.perf_counter()
        for _ in range(arg):
          state = step_fn(state)
        wall = time.perf_counter() - t0
        other = (cpu_busy_seconds() - busy0 - (self_cpu_seconds() - self0)) / wall
        conn.send(("ok", {"step_s": wall / (arg * per_call), "other_cores": max(other, 0.0)}))
      elif cmd == "steps_per_call":
        conn.send(("ok", per_call))
      elif cmd == "reset_hwm":
        conn.send(("ok", reset_hwm()))
      elif cmd == "hwm":
        conn.send(("ok", vm_hwm_mb()))
      elif cmd == "peak":
        conn.send(("ok", matmul_peak(spec.lib)))
      elif cmd == "stop":
        conn.send(("ok", None))
        return
      else:
        conn.send(("error", f"unknown command {cmd!r}"))
    except Exception:
      conn.send(("error", traceback.format_exc(limit=5)))


class Worker:
  """A spawned process holding one implementation; `call` sends a command and waits for its answer."""

  def __init__(self, spec: ImplSpec):
    self.spec = spec
    ctx = mp.get_context("spawn")
    self._conn, child = ctx.Pipe()
    self._proc = ctx.Process(target=_worker_main, args=(child, spec), daemon=True)
    saved = {k: os.environ.get(k) for k in spec.env}
    os.environ.update(spec.env)   # a spawned child inherits the parent's environment at start
    try:
      self._proc.start()
    finally:
      for k, v in saved.items():
        os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    child.close()
    self.status, self.reason = None, None

  def wait_ready(self) -> str:
    """Waits for the build: "ok", "skipped" (an ImportError) or "error"; `reason` says why."""
    if self.status is None:
      try:
        self.status, self.reason = self._conn.recv()
      except EOFError:
        self.status, self.reason = "error", f"worker died with exit code {self._proc.exitcode}"
    return self.status

  def send(self, cmd: str, arg=None) -> None:
    self._conn.send((cmd, arg))

  def recv(self, cmd: str = "command"):
    status, value = self._conn.recv()
    if status != "ok":
      raise RuntimeError(f"{self.spec.name}: {cmd} failed:\n{value}")
    return value

  def call(self, cmd: str, arg=None):
    self.send(cmd, arg)
    return self.recv(cmd)

  def close(self) -> None:
    if self._proc.is_alive() and self.status == "ok":
      try:
        self.call("stop")
      except (EOFError, OSError, RuntimeError):
        pass
    self._proc.join(timeout=30)
    if self._proc.is_alive():
      self._proc.kill()  # only this worker, which we started


# --------------------------------------------------------------------------- bracketed schedule


@dataclasses.dataclass
class BlockLog:
  step_s: list = dataclasses.field(default_factory=list)
  other_cores: list = dataclasses.field(default_factory=list)
  clean: list = dataclasses.field(default_factory=list)
  discarded: int = 0  # loaded attempts that were retried

  def kept_step_s(self) -> list[float]:
    """Step times of the clean blocks, or of all blocks if none was clean."""
    return [s for s, c in zip(self.step_s, self.clean) if c] or self.step_s

  def summary(self) -> dict:
    return {"blocks": len(self.step_s), "clean_blocks": sum(self.clean), "discarded_blocks": self.discarded,
            "median_other_cores": round(statistics.median(self.other_cores), 3) if self.other_cores else None}


def median_ratio(rounds: list[tuple[float, bool]]) -> tuple[float, int]:
  """Median ratio over the rounds whose three blocks were clean (over all rounds if none); and the clean count."""
  clean = [r for r, ok in rounds if ok]
  return statistics.median(clean or [r for r, _ in rounds]), len(clean)


def wait_for_quiet(max_other_cores: float, timeout_s: float, window_s: float = 0.5) -> float:
  """Polls /proc/stat until a window with at most `max_other_cores` of busy CPU, or the timeout; returns the load.

  Called while every worker is idle, so all busy CPU in the window is other work.
  """
  deadline = time.perf_counter() + timeout_s
  while True:
    busy0, self0, t0 = cpu_busy_seconds(), self_cpu_seconds(), time.perf_counter()
    time.sleep(window_s)
    load = (cpu_busy_seconds() - busy0 - (self_cpu_seconds() - self0)) / (time.perf_counter() - t0)
    if load <= max_other_cores or time.perf_counter() > deadline:
      return load


def timed_block(worker: Worker, calls: int, log: BlockLog, max_other_cores: float, retries: int,
                wait_s: float) -> tuple[float, bool]:
  """(step time, clean) of one block: waits (up to `wait_s`) for a quiet machine, retries a loaded block and
  keeps the least loaded attempt if all were loaded."""
  attempts = []
  for _ in range(retries + 1):
    if max_other_cores < float("inf"):
      wait_for_quiet(max_other_cores, wait_s)
    attempts.append(worker.call("block", calls))
    if attempts[-1]["other_cores"] <= max_other_cores:
      break
  best = min(attempts, key=lambda r: r["other_cores"])
  clean = best["other_cores"] <= max_other_cores
  log.discarded += len(attempts) - 1
  log.step_s.append(best["step_s"])
  log.other_cores.append(best["other_cores"])
  log.clean.append(clean)
  return best["step_s"], clean


def run_bracketed(reference: Worker, candidates: list[Worker], calls: dict[str, int], rounds: int,
                  max_other_cores: float = 0.1, retries: int = 2, wait_s: float = 10.0) -> dict:
  """Rounds of ref, c1, ref, c2, ref, ...; returns per implementation its block log and per round (ratio, clean).

  ratio = mean(ref step time of the two bracketing blocks) / candidate step time (> 1: candidate is faster);
  a round is clean when all three of its blocks were.
  """
  logs = {w.spec.name: BlockLog() for w in [reference, *candidates]}
  ratios = {w.spec.name: [] for w in candidates}
  block = lambda w: timed_block(w, calls[w.spec.name], logs[w.spec.name], max_other_cores, retries, wait_s)
  for r in range(rounds):
    ref_before, before_ok = block(reference)
    for cand in candidates:
      (cand_s, cand_ok), (ref_after, after_ok) = block(cand), block(reference)
      ratios[cand.spec.name].append((0.5 * (ref_before + ref_after) / cand_s, before_ok and cand_ok and after_ok))
      ref_before, before_ok = ref_after, after_ok
    print(f"  round {r + 1}/{rounds}: " + ", ".join(f"{k} {v[-1][0]:.3f}{'' if v[-1][1] else ' (loaded)'}"
                                                    for k, v in ratios.items()), file=sys.stderr, flush=True)
  return {"logs": logs, "ratios": ratios}
