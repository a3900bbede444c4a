"""Reading the lab's run directories (COMMON.md format) written here by hand, file by file."""
import json

import numpy as np
import pytest

from analysis import rundirs
from mdm_jax.errors import UserError


def _write_run(root, run_id, *, status="done", n=1_000_000, steps=3, schedule="cosine", torn=False, lr=1e-3, b2=0.95):
  run_dir = root / "runs" / run_id
  run_dir.mkdir(parents=True)
  lines = []
  for step in range(1, steps + 1):
    tokens = step * 1000
    line = {"step": step, "tokens": tokens, "flops": 6.5 * n * tokens, "train/loss": 5.0 - step * 0.1}
    if step % 2 == 1 or step == steps:
      line.update({"eval/loss": 5.0 - step * 0.2, "eval/loss/text": 4.0 - step * 0.1, "eval/loss/image": 6.0 - step * 0.1})
    lines.append(json.dumps(line))
  text = "\n".join(lines) + "\n" + ('{"step": 99, "tok' if torn else "")
  (run_dir / "metrics.jsonl").write_text(text)
  final = json.loads(lines[-1])
  if status != "done":
    final = {}
  run = {"run_id": run_id, "status": status, "diverged_at": 2 if status == "diverged" else None,
         "config": {"batch": {"logical": 16}, "optim": {"lr": lr, "lr_schedule": schedule, "b2": b2},
                    "train": {"seed": 3}, "data": {"mixture": [0.5, 0.25, 0.25]},
                    "sde": {"gamma": 0.44, "batch_base": 256}},
         "params": {"total": n, "non_embedding": n // 2, "with_head": n // 2 + 100, "with_attention": n // 2 + 100},
         "flops": {"train_per_token": 6.5 * n, "convention": "noncausal", "budget": 6.5 * n * steps * 1000},
         "tokens_planned": steps * 1000, "final": final}
  (run_dir / "run.json").write_text(json.dumps(run))
  return run_dir


@pytest.fixture
def sweep(tmp_path):
  _write_run(tmp_path, "a", n=1_000_000)
  _write_run(tmp_path, "b", n=2_000_000, torn=True)
  _write_run(tmp_path, "c", status="diverged")
  _write_run(tmp_path, "d", status="running")
  return tmp_path


def test_sweep_dir_gives_one_row_per_done_run(sweep):
  t = rundirs.load_run_dirs(sweep, convention="non_embedding")
  assert list(t.df["run_id"]) == ["a", "b"]
  np.testing.assert_allclose(t.column("params"), [500_000, 1_000_000])
  np.testing.assert_allclose(t.column("params_total"), [1e6, 2e6])
  np.testing.assert_allclose(t.column("loss"), [4.4, 4.4])
  np.testing.assert_allclose(t.column("flops"), [6.5e6 * 3000, 13e6 * 3000])
  assert t.params_convention == "non_embedding" and t.flops_convention == "noncausal"
  assert {e["run_id"]: e["reason"] for e in t.exclusions} == {"c": "status 'diverged' at step 2",
                                                              "d": "status 'running'"}
  assert list(t.df["batch_size"]) == [16, 16] and list(t.df["seed"]) == [3, 3]
  assert list(t.df["mix_image"]) == [0.25, 0.25]
  assert t.metadata["hyperparameters"]["optim.lr_schedule"] == "cosine" and t.metadata["mixed_settings"] == []


def test_per_step_rows_and_6nd_flops(sweep):
  t = rundirs.load_run_dirs(sweep / "runs" / "a", per_step=True, flops="6ND")
  assert list(t.df["step"]) == [1, 3]  # eval steps only
  np.testing.assert_allclose(t.column("flops"), 6 * 1e6 * np.array([1000, 3000]))
  assert t.flops_convention == "6ND"


def test_per_modality_rows(sweep):
  t = rundirs.load_run_dirs(sweep, modalities=True)
  assert sorted(set(t.df["modality"])) == ["image", "text"] and len(t) == 4


def test_final_without_the_loss_key_falls_back_to_the_last_eval_line(tmp_path):
  run_dir = _write_run(tmp_path, "a", steps=4)
  run = json.loads((run_dir / "run.json").read_text())
  run["final"] = {"step": 4, "tokens": 4000, "flops": 1.0, "train/loss": 4.6}
  (run_dir / "run.json").write_text(json.dumps(run))
  t = rundirs.load_run_dirs(tmp_path)
  assert t.column("loss")[0] == pytest.approx(4.2)  # step 4 has eval


def test_mixed_schedules_are_flagged_and_kappa_settings_recorded(tmp_path):
  """§5.9 pitfall 9: settings are data. A schedule that differs between runs is flagged; a β2 rescaled per run
  (the κ rule does that) and the rule's own settings are recorded without a warning."""
  _write_run(tmp_path, "a", schedule="cosine", b2=0.95)
  _write_run(tmp_path, "b", schedule="wsd", b2=0.9025)
  t = rundirs.load_run_dirs(tmp_path)
  hp = t.metadata["hyperparameters"]
  assert t.metadata["mixed_settings"] == ["optim.lr_schedule"]
  assert hp["optim.lr_schedule"] == ["cosine", "wsd"] and hp["optim.b2"] == [0.9025, 0.95]
  assert hp["sde.gamma"] == 0.44 and hp["sde.batch_base"] == 256
  assert "optim.lr" not in hp  # swept on purpose: a column, not metadata


def test_bad_run_dirs_are_user_errors(tmp_path):
  with pytest.raises(UserError, match="no run directories"):
    rundirs.load_run_dirs(tmp_path)
  run_dir = _write_run(tmp_path, "a")
  lines = (run_dir / "metrics.jsonl").read_text().splitlines()
  (run_dir / "metrics.jsonl").write_text("\n".join([lines[0], "{oops", lines[1]]) + "\n")
  with pytest.raises(UserError, match="metrics.jsonl:2"):
    rundirs.load_run_dirs(tmp_path, per_step=True)
  with pytest.raises(UserError, match="convention"):
    rundirs.load_run_dirs(tmp_path, convention="kaplan")
  (run_dir / "run.json").write_text("{broken")
  with pytest.raises(UserError, match="run.json"):
    rundirs.load_run_dirs(tmp_path)


def test_no_usable_runs_is_a_user_error(tmp_path):
  _write_run(tmp_path, "a", status="failed")
  with pytest.raises(UserError, match="no usable runs"):
    rundirs.load_run_dirs(tmp_path)
