"""Orbax checkpoints of a run: train state (sharded arrays) + data-iterator state, periodic async saves, keep-N.

Restore targets carry shardings, so a run can resume on a different device count or mesh.
"""
import pathlib

import jax
import orbax.checkpoint as ocp


class Checkpoints:
  def __init__(self, run_dir: str | pathlib.Path, keep: int, every: int):
    self.dir = pathlib.Path(run_dir).absolute() / "checkpoints"
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, save_interval_steps=every, create=True,
                                           enable_async_checkpointing=True)
    self.manager = ocp.CheckpointManager(self.dir, options=options, item_names=("state", "data"))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state, data_state: dict, force: bool = False) -> bool:
    return self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                           data=ocp.args.JsonSave(data_state)), force=force)

  def restore(self, step: int, abstract_state):
    """(state, data_state) at `step`; `abstract_state` holds ShapeDtypeStructs with the target shardings."""
    restored = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                                                                  data=ocp.args.JsonRestore()))
    return restored.state, restored.data

  def wait(self):
    self.manager.wait_until_finished()

  def close(self):
    self.manager.close()


def abstract_like(state, shardings):
  """ShapeDtypeStructs of `state` placed by `shardings` (restore target)."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings)


def load_params(run_dir: str | pathlib.Path, step: int | None = None) -> dict:
  """The parameters saved at `step` (default: latest) as host arrays, for analysis and comparisons."""
  ckpts = Checkpoints(run_dir, keep=1, every=1)
  step = ckpts.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"{run_dir}: no checkpoint")
  restored = ckpts.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  ckpts.close()
  return jax.device_get(restored.state["params"])
