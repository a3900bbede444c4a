"""Config loading, overrides and one-line errors (exit code 2 from the CLI)."""
import json
import os
import subprocess
import sys

import pytest

from labs.cli import main
from mdm_jax.config import Config, load_config
from mdm_jax.errors import ConfigError


def test_bundled_config_loads_and_overrides_apply(tmp_path):
  cfg = load_config("tiny", ["optim.lr=1e-3", "model.d_model=256", "diffusion.schedule=cosine"])
  assert (cfg.optim.lr, cfg.model.d_model, cfg.diffusion.schedule) == (1e-3, 256, "cosine")
  path = tmp_path / "c.json"
  path.write_text(json.dumps(cfg.to_dict()))
  assert load_config(path) == cfg                      # JSON round trip
  assert load_config(path).fingerprint() == cfg.fingerprint()
  assert cfg.replace(output_dir="elsewhere").fingerprint() == cfg.fingerprint()


def test_token_budget_sets_steps():
  cfg = load_config("tiny", ["train.steps=0", "train.tokens=204800"])
  assert cfg.total_steps == 204800 // (16 * 128)


@pytest.mark.parametrize("override, field", [
    ("model.d_model=-8", "model.d_model"),
    ("model.n_heads=3", "model.n_heads"),
    ("diffusion.schedule=sqrt", "diffusion.schedule"),
    ("optim.lr_schedule=step", "optim.lr_schedule"),
    ("model.widht=64", "model.widht"),
    ("batch.physical=5", "batch.physical"),
    ("optim.b2=1.5", "optim.b2"),
    ("data.mixture=[0.5,0.6,0]", "data.mixture"),
    ("model.n_layers=two", "model.n_layers"),
])
def test_bad_values_name_their_field(override, field):
  with pytest.raises(ConfigError) as err:
    load_config("tiny", [override])
  assert err.value.field == field
  assert "\n" not in str(err.value)


@pytest.mark.parametrize("override, needle", [
    ("model.d_model=-8", "model.d_model: must be > 0"),
    ("model.n_heads=3", "model.n_heads: must divide d_model"),
    ("diffusion.schedule=sqrt", "diffusion.schedule: unknown schedule"),
])
def test_cli_bad_config_exits_2_with_one_line(tmp_path, capsys, override, needle):
  assert main(["train", "tiny", "--out", str(tmp_path / "r"), "--set", override]) == 2
  err = capsys.readouterr().err.strip()
  assert needle in err and len(err.splitlines()) == 1
  assert not (tmp_path / "r").exists()   # nothing written for a bad config


def test_cli_batch_not_divisible_by_data_axes_exits_2(tmp_path):
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
  out = subprocess.run([sys.executable, "-m", "labs.cli", "train", "tiny", "--out", str(tmp_path / "r"),
                        "--set", "batch.logical=12", "--set", "batch.physical=12"], env=env, capture_output=True,
                       text=True, timeout=300)
  assert out.returncode == 2, out.stderr
  assert "batch.physical: micro-batch 12 is not divisible by data×fsdp = 8" in out.stderr
  assert len(out.stderr.strip().splitlines()) == 1


def test_default_config_is_valid():
  assert Config().vocab_size == 512
