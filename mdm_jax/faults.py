"""Fault injection for tests: MDM_LAB_FAULTS="fault[,fault...]" with fault = [RUN_ID:]KIND@STEP[:once].

Faults fire after optimizer step STEP has completed (and after the checkpoint saved at that step, if any), in the
order written. Off unless the variable is set. Kinds:
  raise      RuntimeError("injected fault: raise at step STEP"): a crashing run (recorded as failed)
  interrupt  KeyboardInterrupt, as Ctrl-C / SIGTERM: checkpoint and status `interrupted`
  kill       SIGKILL to this process: no cleanup at all (a power cut, the OOM killer)
  nan        poison the parameters so the next step's loss is really NaN (divergence)
  explode    scale the parameters by 1e4 so the next step's gradient norm explodes (divergence by
             train.max_grad_norm while the loss may stay finite)
  corrupt    damage the checkpoint just saved at STEP (every file of it truncated to half, a torn write); the
             run goes on, and a later restore must fall back to an older checkpoint. STEP must be a save step.
RUN_ID targets one run (its config fingerprint); without it every run is affected. `:once` makes a fault one-shot
per run directory: it fires on the first attempt only, and a marker in RUN_DIR/faults.fired keeps sweep retries and
resumes from firing it again (written before the fault acts, so even `kill` is recorded).
"""
import dataclasses
import os
import pathlib
import signal

ENV = "MDM_LAB_FAULTS"
KINDS = ("raise", "interrupt", "kill", "nan", "explode", "corrupt")
FIRED = "faults.fired"
EXPLODE_SCALE = 1e4


@dataclasses.dataclass(frozen=True)
class Fault:
  kind: str
  step: int
  once: bool = False

  @property
  def name(self) -> str:
    return f"{self.kind}@{self.step}" + (":once" if self.once else "")


def parse(text: str) -> list[tuple[str | None, Fault]]:
  """[(target run id or None, Fault)] from the variable's syntax; ValueError naming the bad item."""
  out = []
  for item in filter(None, (s.strip() for s in text.split(","))):
    parts = item.split(":")
    once = parts[-1] == "once"
    if once:
      parts.pop()
    if len(parts) not in (1, 2) or not all(parts):
      raise ValueError(f"{ENV}: bad fault {item!r}; use [RUN_ID:]KIND@STEP[:once]")
    target = parts[0] if len(parts) == 2 else None
    kind, _, step = parts[-1].partition("@")
    if kind not in KINDS or not step.isdigit() or int(step) < 1:
      raise ValueError(f"{ENV}: bad fault {item!r}; use KIND@STEP with KIND in {', '.join(KINDS)} and STEP >= 1")
    out.append((target, Fault(kind, int(step), once)))
  return out


class Plan:
  """The faults of one run; `at(step)` lists those due after `step`, skipping one-shot faults already fired."""

  def __init__(self, run_id: str, run_dir: str | pathlib.Path | None = None):
    self.faults = [f for target, f in parse(os.environ.get(ENV, "")) if target in (None, run_id)]
    self.marker = pathlib.Path(run_dir) / FIRED if run_dir is not None else None

  def __bool__(self) -> bool:
    return bool(self.faults)

  def at(self, step: int) -> list[Fault]:
    due = [f for f in self.faults if f.step == step]
    if any(f.once for f in due):
      fired = set(self.marker.read_text().split()) if self.marker and self.marker.exists() else set()
      due = [f for f in due if not (f.once and f.name in fired)]
    return due

  def fire(self, fault: Fault) -> None:
    """Record a one-shot fault as fired (before it acts), durably."""
    if fault.once and self.marker is not None:
      from mdm_jax import runio
      runio.append_text(self.marker, fault.name + "\n")


def planned(run_id: str, run_dir: str | pathlib.Path | None = None) -> Plan:
  return Plan(run_id, run_dir)


def inject(fault: Fault, state, plan: Plan | None = None, ckpts=None, member=None):
  """Apply a fault after the step that just completed; returns the (possibly poisoned) state.

  `ckpts` is the run's `checkpoint.Checkpoints` (for `corrupt`); `member` selects one run of a vmapped group (its
  index on the leading run axis) for the state faults, so the other members are untouched."""
  if plan is not None:
    plan.fire(fault)
  kind = fault.kind
  if kind == "raise":
    raise RuntimeError(f"injected fault: raise at step {fault.step}")
  if kind == "interrupt":
    raise KeyboardInterrupt
  if kind == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
  if kind == "corrupt":
    corrupt_checkpoint(ckpts, fault.step)
    return state
  if kind in ("nan", "explode"):
    import jax
    import jax.numpy as jnp
    factor = jnp.nan if kind == "nan" else EXPLODE_SCALE
    scale = (lambda x: x * factor) if member is None else (lambda x: x.at[member].multiply(factor))
    return {**state, "params": jax.tree.map(scale, state["params"])}
  raise AssertionError(kind)


def corrupt_checkpoint(ckpts, step: int) -> list[pathlib.Path]:
  """Truncate every file of the checkpoint at `step` to half its size (after its async save has finished)."""
  if ckpts is None:
    raise ValueError("corrupt fault needs the run's checkpoints")
  ckpts.wait()
  step_dir = ckpts.dir / str(step)
  if not step_dir.is_dir():
    raise ValueError(f"{ENV}: corrupt@{step}: no checkpoint saved at step {step} (use a checkpoint step)")
  damaged = []
  for path in sorted(p for p in step_dir.rglob("*") if p.is_file()):
    size = path.stat().st_size
    with open(path, "rb+") as f:
      f.truncate(size // 2)
    damaged.append(path)
  return damaged
