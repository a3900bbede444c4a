"""Session fixtures for the sampling tests: a small real prepared directory and a tiny model trained on it."""
import dataclasses
import importlib.util
import json
import pathlib

import pytest

from mdm_jax.data import prepare


def _micro_set():
  """The data tests' MICRO set (tests/data/conftest.py), with fewer utterances: sampling needs only a few."""
  spec = importlib.util.spec_from_file_location("data_conftest", pathlib.Path(__file__).parent.parent / "data" /
                                                "conftest.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return dataclasses.replace(module.MICRO, name="micro-sampling", audio_train_utterances=24, audio_val_utterances=8,
                             audio_codebook_utterances=16, recon_utterances=1, recon_images=20)


def train_overrides(data_dir, manifest, steps: int) -> list[str]:
  vocab = manifest["vocab"]
  return [f"data.source={data_dir}", f"data.seq_len={manifest['seq_len']}",
          f"data.text_vocab_size={vocab['text_size']}", f"data.image_vocab_size={vocab['image_size']}",
          f"data.audio_vocab_size={vocab['audio_size']}", "data.mixture=[0.4,0.3,0.3]", f"train.steps={steps}",
          f"train.log_every={steps}", f"train.eval_every={steps}", f"train.checkpoint_every={steps}",
          "train.eval_batches=1", "train.peak_flops=1e11", "batch.logical=8", "batch.physical=8", "optim.lr=5e-3",
          "model.d_model=32", "model.n_heads=2", "model.n_layers=1", "model.d_ff=64"]


@pytest.fixture(scope="session")
def micro_data(tmp_path_factory):
  out = tmp_path_factory.mktemp("sampling-data")
  manifest, _ = prepare.prepare(out, _micro_set(), progress=False, workers=2)
  return out, manifest


@pytest.fixture(scope="session")
def micro_run(micro_data, tmp_path_factory):
  """A 1-layer model trained for 24 steps on the micro directory, through `mdm-lab train`."""
  from labs.cli import main
  data_dir, manifest = micro_data
  run_dir = tmp_path_factory.mktemp("sampling-run")
  args = ["train", "tiny", "--out", str(run_dir), "--no-progress"]
  for item in train_overrides(data_dir, manifest, 24):
    args += ["--set", item]
  assert main(args) == 0
  assert json.loads((run_dir / "run.json").read_text())["status"] == "done"
  return run_dir
