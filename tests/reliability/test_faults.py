"""The fault-injection harness (grammar, targeting, one-shot faults) and divergence by NaN loss or gradient norm."""
import json

import pytest

from mdm_jax import faults, runio
from mdm_jax.config import load_config
from mdm_jax.errors import ConfigError
from mdm_jax.train import train
from tests.reliability.conftest import overrides


def test_fault_grammar_targets_runs_and_keeps_the_written_order(monkeypatch, tmp_path):
  monkeypatch.setenv(faults.ENV, "abc:corrupt@8:once, abc:raise@8:once,nan@3,other:kill@1")
  plan = faults.planned("abc", tmp_path)
  assert [f.name for f in plan.at(8)] == ["corrupt@8:once", "raise@8:once"]
  assert [f.name for f in plan.at(3)] == ["nan@3"] and plan.at(1) == []
  assert [f.name for f in faults.planned("other").at(1)] == ["kill@1"]
  assert not faults.planned("nobody", tmp_path).at(8)


@pytest.mark.parametrize("text", ["boom@3", "raise@", "raise@0", "raise@x", "a:b:raise@3", "raise@3:twice",
                                  ":raise@3"])
def test_bad_fault_plans_are_rejected(monkeypatch, text):
  monkeypatch.setenv(faults.ENV, text)
  with pytest.raises(ValueError, match=faults.ENV):
    faults.planned("abc")


def test_a_one_shot_fault_fires_once_per_run_directory(monkeypatch, tmp_path):
  monkeypatch.setenv(faults.ENV, "raise@4:once,interrupt@4")
  plan = faults.planned("abc", tmp_path)
  first = plan.at(4)
  with pytest.raises(RuntimeError, match="injected fault: raise at step 4"):
    faults.inject(first[0], {}, plan)
  assert (tmp_path / faults.FIRED).read_text() == "raise@4:once\n"
  again = faults.planned("abc", tmp_path).at(4)   # a retry in the same run directory
  assert [f.name for f in again] == ["interrupt@4"]   # the persistent fault still fires every time
  assert [f.name for f in faults.planned("abc", tmp_path / "elsewhere").at(4)] == ["raise@4:once", "interrupt@4"]


def test_exploding_gradient_norm_stops_the_run_as_diverged_and_keeps_the_last_good_metrics(tmp_path, monkeypatch):
  monkeypatch.setenv(faults.ENV, "explode@9")
  cfg = load_config("tiny", overrides(train__max_grad_norm=1e3))
  result = train(cfg, tmp_path, progress=False)
  run = json.loads((tmp_path / runio.RUN_JSON).read_text())
  assert result.status == run["status"] == "diverged"
  assert run["diverged_at"] == 10 and run["diverged_reason"].startswith("gradient norm")
  assert "> train.max_grad_norm=1000" in run["diverged_reason"]
  rows = runio.read_metrics(tmp_path / runio.METRICS)
  assert [r["step"] for r in rows] == [4, 8] and run["final"] == rows[-1]   # the last good line, nothing after
  assert max(r["optim/grad_norm"] for r in rows) < 1e3   # healthy steps were below the limit
  assert "diverged at step 10: gradient norm" in (tmp_path / runio.RUN_LOG).read_text()


def test_nan_loss_is_divergence_and_run_json_stays_strict_json(tmp_path, monkeypatch):
  monkeypatch.setenv(faults.ENV, "nan@5")
  result = train(load_config("tiny", overrides()), tmp_path, progress=False)
  text = (tmp_path / runio.RUN_JSON).read_text()
  run = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
  assert (result.status, run["diverged_at"], run["final"]["step"]) == ("diverged", 6, 4)
  assert run["diverged_reason"].startswith("non-finite loss")


@pytest.mark.parametrize("value", ["-1", "nan", "inf"])
def test_max_grad_norm_is_validated(value):
  with pytest.raises(ConfigError, match="train.max_grad_norm") as e:
    load_config("tiny", [f"train.max_grad_norm={value}"])
  assert "\n" not in str(e.value)
