"""SIGKILL at a random step, then resume: the final parameters are bit-identical to an uninterrupted run.

The killed run is a real `mdm-lab train` process that SIGKILLs itself (fault `kill`) after a step drawn at random;
the draw's seed is printed in the test summary and MDM_LAB_TEST_SEED=<seed> replays it. The kill can land anywhere:
before the first checkpoint (resume from scratch), right after an asynchronous save was started (a partial
checkpoint on disk) or after the final save but before run.json says done.
"""
import json
import os
import random
import subprocess
import sys

import numpy as np

from mdm_jax import checkpoint, faults, runio
from mdm_jax.config import load_config
from mdm_jax.train import train
from tests.reliability.conftest import LOGGED_STEPS, TINY, cli_set, deterministic, overrides, report, subprocess_env

def _kill_step() -> tuple[int, int]:
  seed = int(os.environ.get("MDM_LAB_TEST_SEED") or random.SystemRandom().randrange(2 ** 31))
  return random.Random(seed).randint(1, TINY["train.steps"]), seed


def test_sigkill_at_a_random_step_then_resume_gives_bit_identical_parameters(tmp_path, record_property):
  kill_at, seed = _kill_step()
  note = f"SIGKILL after step {kill_at} of {TINY['train.steps']} (MDM_LAB_TEST_SEED={seed})"
  report(note)
  record_property("kill_step", kill_at)
  record_property("seed", seed)

  straight = tmp_path / "straight"
  assert train(load_config("tiny", overrides()), straight, progress=False).status == "done"

  resumed = tmp_path / "killed"
  killed = subprocess.run([sys.executable, "-m", "labs.cli", "train", "tiny", "--out", str(resumed), "--no-progress",
                           *cli_set()], env=subprocess_env(**{faults.ENV: f"kill@{kill_at}"}), capture_output=True,
                          timeout=600)
  assert killed.returncode == -9, f"{note}: {killed.stderr.decode()[-3000:]}"
  assert json.loads((resumed / runio.RUN_JSON).read_text())["status"] == "running", note   # no cleanup ran
  on_disk = checkpoint.Checkpoints(resumed, keep=2, every=1)
  saved = on_disk.all_steps()
  on_disk.manager.close()
  assert all(s <= kill_at for s in saved), (note, saved)

  result = train(load_config("tiny", overrides()), resumed, progress=False)
  assert result.status == "done", note
  run = runio.read_json(resumed / runio.RUN_JSON)
  assert run["resumed_from"] == (max(saved) if saved else None), (note, saved, run["resumed_from"])

  final_a, final_b = checkpoint.load_params(straight), checkpoint.load_params(resumed)
  leaves_a, leaves_b = _leaves(final_a), _leaves(final_b)
  assert leaves_a.keys() == leaves_b.keys()
  for path, a in leaves_a.items():
    b = leaves_b[path]
    assert a.dtype == b.dtype and a.shape == b.shape
    assert a.tobytes() == b.tobytes(), f"{note}: parameter {path} differs (max |diff| {np.abs(a - b).max()})"

  rows_a = runio.read_metrics(straight / runio.METRICS)
  rows_b = runio.read_metrics(resumed / runio.METRICS)
  assert [r["step"] for r in rows_b] == LOGGED_STEPS, note   # every logged step exactly once
  assert deterministic(rows_b) == deterministic(rows_a), note   # the same losses, bit for bit
  assert run["final"]["train/loss"] == rows_a[-1]["train/loss"]


def _leaves(tree) -> dict:
  import jax
  return {jax.tree_util.keystr(path): np.asarray(x) for path, x in jax.tree_util.tree_leaves_with_path(tree)}
