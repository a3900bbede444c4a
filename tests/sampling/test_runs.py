"""Loading a run for inference, and the held-out data it is judged against."""
import json
import shutil

import jax
import numpy as np
import pytest

from mdm_jax import checkpoint
from mdm_jax.errors import UserError
from mdm_jax.sampling import runs
from mdm_jax.sampling.heldout import HeldOut


def test_loaded_parameters_are_the_checkpoints_and_drive_the_model(micro_run):
  loaded = runs.load(micro_run)
  saved = checkpoint.load_params(micro_run)
  assert loaded.step == 24
  np.testing.assert_array_equal(np.asarray(loaded.params["embed"]), np.asarray(saved["embed"]))
  logits = jax.eval_shape(loaded.apply, jax.ShapeDtypeStruct((1, loaded.cfg.data.seq_len), np.int32))
  assert logits.shape == (1, loaded.cfg.data.seq_len, loaded.cfg.vocab_size)
  assert isinstance(loaded.apply, jax.tree_util.Partial) and loaded.stored_defaults() == {}


def test_missing_checkpoints_and_steps_are_user_errors(micro_run, tmp_path):
  with pytest.raises(UserError, match="available steps: \\[24\\]") as missing:
    runs.load(micro_run, step=7)
  assert missing.value.field == str((micro_run / "checkpoints").absolute())   # names the directory it looked in
  shutil.copy(micro_run / "run.json", tmp_path / "run.json")
  with pytest.raises(UserError, match="no checkpoint"):
    runs.load(tmp_path)
  record = json.loads((tmp_path / "run.json").read_text())
  (tmp_path / "run.json").write_text(json.dumps(dict(record, param_layout=1)))
  with pytest.raises(UserError, match="param_layout.*is 1"):
    runs.load(tmp_path)


def test_held_out_rows_come_from_the_validation_split(micro_run, micro_data):
  _, manifest = micro_data
  held = HeldOut.for_config(runs.read_config(micro_run), ("image",), max_rows=5)
  rows = held.rows("image")
  assert rows["tokens"].shape == (5, manifest["seq_len"]) and rows["prompt"].any(axis=1).all()
  assert len(held.train_text) == manifest["splits"]["text"]["train"]["sequences"]
  with pytest.raises(UserError, match="no held-out audio"):
    held.rows("audio")


@pytest.mark.parametrize("text, problem", [('{"defaults": {"text": ', "unreadable"),
                                           ('{"defaults": ["random"]}', "not a mapping")])
def test_a_damaged_defaults_file_is_a_user_error_naming_it(micro_run, text, problem):
  loaded = runs.load(micro_run)
  path = micro_run / runs.DEFAULTS_FILE
  path.write_text(text)
  try:
    with pytest.raises(UserError, match=f"{runs.DEFAULTS_FILE}.*{problem}.*sample-sweep"):
      loaded.stored_defaults()
  finally:
    path.unlink()   # the session's run is shared with other tests
