"""Orbax checkpoints of a run: train state (sharded arrays) + data-iterator state, periodic async saves, keep-N.

Restore targets carry shardings, so a run can resume on a different device count or mesh.

Robustness: `restore_latest` tries checkpoints newest first and falls back to the newest *readable* one when a
later one is corrupt or partial; each unreadable checkpoint is moved aside to RUN_DIR/checkpoints.corrupt/ (kept for
inspection, and so that the same step can be saved again) and reported to the caller, which records it in run.json
("restore_fallbacks") and RUN_DIR/run.log. Orbax raises an async save's error only once per thread, at the next
wait; `Checkpoints` keeps it and raises `CheckpointSaveError` on every later save/wait, so it can never vanish.
"""
import pathlib
import shutil
import time

import jax
import orbax.checkpoint as ocp

from mdm_jax.errors import UserError

CORRUPT_DIR = "checkpoints.corrupt"


class CheckpointSaveError(RuntimeError):
  """An (asynchronous) checkpoint save failed; the run must not report success."""


def check_dir(run_dir: str | pathlib.Path) -> pathlib.Path:
  """RUN_DIR/checkpoints, after checking it can be a checkpoint directory (UserError naming it otherwise)."""
  path = pathlib.Path(run_dir).absolute() / "checkpoints"
  if path.exists() and not path.is_dir():
    raise UserError(str(path), "is not a directory", "move the file away; Orbax checkpoints go in this directory")
  if path.is_dir():
    junk = [p.name for p in path.iterdir() if p.is_dir() and not p.name.isdigit() and ".orbax-checkpoint-tmp" not in
            p.name]
    if junk:
      raise UserError(str(path), f"holds {junk[0]!r}, which is not an Orbax step directory",
                      "keep only checkpoints written by mdm-lab in it")
  return path


class Checkpoints:
  def __init__(self, run_dir: str | pathlib.Path, keep: int, every: int, create: bool = True):
    """`create=False` for readers: a run without checkpoints is a UserError, and no directory is made."""
    self.run_dir = pathlib.Path(run_dir).absolute()
    self.dir = check_dir(self.run_dir)
    if not create and not self.dir.is_dir():
      raise UserError(str(self.dir), "no checkpoint (the directory does not exist)", "train the run first")
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, save_interval_steps=every, create=True,
                                           enable_async_checkpointing=True)
    self.manager = ocp.CheckpointManager(self.dir, options=options, item_names=("state", "data"))
    self.error: CheckpointSaveError | None = None
    self._pending: int | None = None   # step of the save whose background part may still be running

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def save(self, step: int, state, data_state: dict, force: bool = False) -> bool:
    self._raise_pending()
    try:
      saved = self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                              data=ocp.args.JsonSave(data_state)), force=force)
    except Exception as e:   # noqa: BLE001 - the previous save's background error surfaces here
      self._fail(self._pending if self._pending is not None else step, e)
    if saved:
      self._pending = step
    return saved

  def restore(self, step: int, abstract_state):
    """(state, data_state) at `step`; `abstract_state` holds ShapeDtypeStructs with the target shardings."""
    restored = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                                                                  data=ocp.args.JsonRestore()))
    return restored.state, restored.data

  def restore_latest(self, abstract_state):
    """(step, state, data_state, fallbacks) from the newest readable checkpoint, or (None, None, None, fallbacks)
    when there is none. `fallbacks` lists every newer checkpoint that could not be read, with its error; those are
    moved to RUN_DIR/checkpoints.corrupt/. If every checkpoint is unreadable, UserError naming the directory."""
    fallbacks = []
    steps = self.all_steps()
    for step in reversed(steps):
      try:
        state, data_state = self.restore(step, abstract_state)
      except Exception as e:   # noqa: BLE001 - any failure to read means: try the previous checkpoint
        fallbacks.append({"step": step, "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                          [:300], "moved_to": str(self._quarantine(step))})
        continue
      if fallbacks:
        self.manager.reload()
      return step, state, data_state, fallbacks
    if fallbacks:
      raise UserError(str(self.dir), f"none of the {len(steps)} checkpoints is readable (steps {steps}; newest: "
                      f"{fallbacks[0]['error']})", f"they were moved to {self.run_dir / CORRUPT_DIR}; remove "
                      f"{self.run_dir / 'metrics.jsonl'} too to restart the run from scratch")
    return None, None, None, fallbacks

  def _quarantine(self, step: int) -> pathlib.Path:
    """Move an unreadable step directory out of the manager's sight (only process 0 touches the files)."""
    src = self.dir / str(step)
    dst = self.run_dir / CORRUPT_DIR / f"{step}-{time.strftime('%Y%m%dT%H%M%S')}"
    if jax.process_index() == 0 and src.exists():
      dst.parent.mkdir(exist_ok=True)
      while dst.exists():
        dst = dst.with_name(dst.name + "+")
      shutil.move(str(src), str(dst))
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      multihost_utils.sync_global_devices(f"mdm-lab-quarantine-{step}")
    return dst

  def wait(self):
    """Block until the last save is on disk; CheckpointSaveError if it (or any earlier one) failed."""
    self._raise_pending()

  def close(self):
    try:
      self._raise_pending()
    finally:
      self.manager.close()

  def _raise_pending(self):
    if self.error is not None:
      raise self.error
    try:
      self.manager.wait_until_finished()
    except Exception as e:   # noqa: BLE001
      self._fail(self._pending, e)
    self._pending = None

  def _fail(self, step, cause: Exception):
    self.error = CheckpointSaveError(f"checkpoint save at step {step} failed in {self.dir}: "
                                     f"{type(cause).__name__}: {cause}")
    raise self.error from cause


def abstract_like(state, shardings):
  """ShapeDtypeStructs of `state` placed by `shardings` (restore target)."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings)


def load_params(run_dir: str | pathlib.Path, step: int | None = None) -> dict:
  """The parameters saved at `step` (default: the newest readable checkpoint) as host arrays, for analysis and
  comparisons. UserError naming the directory when there is no (readable) checkpoint."""
  ckpts = Checkpoints(run_dir, keep=1, every=1, create=False)
  try:
    steps = ckpts.all_steps()
    if not steps or (step is not None and step not in steps):
      raise UserError(str(ckpts.dir), f"no checkpoint{f' at step {step}' if step is not None else ''}"
                      f" (steps on disk: {steps})", "train the run first, or pick a saved step")
    errors = []
    for s in ([step] if step is not None else reversed(steps)):
      try:
        restored = ckpts.manager.restore(s, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
        return jax.device_get(restored.state["params"])
      except Exception as e:   # noqa: BLE001
        errors.append(f"step {s}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:200])
    raise UserError(str(ckpts.dir), f"no readable checkpoint ({'; '.join(errors)})", "re-train or restore a backup")
  finally:
    ckpts.manager.close()
