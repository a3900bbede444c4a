"""Checkpoint robustness: fall back past corrupt or partial checkpoints, async save errors that cannot vanish, and
checkpoint directories that are not."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mdm_jax import checkpoint, faults
from mdm_jax.errors import UserError


def _state(step: int) -> dict:
  return {"step": jnp.int32(step), "params": {"w": jnp.arange(64.0).reshape(8, 8) * step, "b": jnp.ones(8) * step}}


def _target(state):
  return checkpoint.abstract_like(state, jax.tree.map(lambda x: x.sharding, state))


def _saved(run_dir, steps=(4, 8, 12)) -> checkpoint.Checkpoints:
  ckpts = checkpoint.Checkpoints(run_dir, keep=3, every=4)
  for s in steps:
    assert ckpts.save(s, _state(s), {"position": s})
  ckpts.wait()
  return ckpts


def test_restore_falls_back_to_the_newest_readable_checkpoint_and_moves_bad_ones_aside(tmp_path):
  ckpts = _saved(tmp_path)
  faults.corrupt_checkpoint(ckpts, 12)   # a torn write of the newest
  (ckpts.dir / "8" / "state" / "manifest.ocdbt").unlink()   # a partial one below it
  ckpts.close()
  ckpts = checkpoint.Checkpoints(tmp_path, keep=3, every=4)
  assert ckpts.latest_step() == 12
  step, state, data, fallbacks = ckpts.restore_latest(_target(_state(0)))
  assert step == 4 and data == {"position": 4} and int(state["step"]) == 4
  np.testing.assert_array_equal(state["params"]["w"], _state(4)["params"]["w"])
  assert [f["step"] for f in fallbacks] == [12, 8] and all(f["error"] for f in fallbacks)
  assert sorted(p.name.split("-")[0] for p in (tmp_path / checkpoint.CORRUPT_DIR).iterdir()) == ["12", "8"]
  assert ckpts.all_steps() == [4]
  assert ckpts.save(8, _state(8), {"position": 8})   # the quarantined step can be saved again
  ckpts.close()
  assert checkpoint.Checkpoints(tmp_path, keep=3, every=4).all_steps() == [4, 8]


def test_no_readable_checkpoint_is_a_user_error_naming_the_directory(tmp_path):
  ckpts = _saved(tmp_path, steps=(4,))
  faults.corrupt_checkpoint(ckpts, 4)
  with pytest.raises(UserError, match="none of the 1 checkpoints is readable") as e:
    ckpts.restore_latest(_target(_state(0)))
  assert e.value.field == str(tmp_path.absolute() / "checkpoints")
  ckpts.close()
  with pytest.raises(UserError, match="no checkpoint"):
    checkpoint.load_params(tmp_path)


def test_load_params_skips_a_corrupt_latest_checkpoint(tmp_path):
  ckpts = _saved(tmp_path, steps=(4, 8))
  faults.corrupt_checkpoint(ckpts, 8)
  ckpts.close()
  np.testing.assert_array_equal(checkpoint.load_params(tmp_path)["b"], np.ones(8) * 4)
  with pytest.raises(UserError, match="no readable checkpoint"):
    checkpoint.load_params(tmp_path, step=8)


def test_an_async_save_error_surfaces_at_every_later_wait_and_is_never_lost(tmp_path):
  ckpts = checkpoint.Checkpoints(tmp_path, keep=2, every=1)
  assert ckpts.save(1, _state(1), {"iterator": object()})   # JSON serialisation fails in Orbax's background thread
  with pytest.raises(checkpoint.CheckpointSaveError, match="step 1 failed.*not JSON serializable"):
    ckpts.wait()
  with pytest.raises(checkpoint.CheckpointSaveError):   # Orbax itself raises only once; we keep raising
    ckpts.save(2, _state(2), {"position": 2})
  with pytest.raises(checkpoint.CheckpointSaveError):
    ckpts.close()
  assert checkpoint.Checkpoints(tmp_path, keep=2, every=1).all_steps() == []


@pytest.mark.parametrize("make, problem", [
    (lambda d: (d / "checkpoints").write_text("not a directory"), "is not a directory"),
    (lambda d: (d / "checkpoints" / "backup").mkdir(parents=True), "not an Orbax step directory"),
])
def test_a_checkpoint_directory_that_is_not_one_is_a_user_error(tmp_path, make, problem):
  make(tmp_path)
  with pytest.raises(UserError, match=problem) as e:
    checkpoint.Checkpoints(tmp_path, keep=2, every=1)
  assert e.value.field == str(tmp_path.absolute() / "checkpoints") and "\n" not in str(e.value)
