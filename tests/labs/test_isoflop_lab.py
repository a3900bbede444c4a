"""The isoflop lab: its specs plan every size at every budget on the prepared data, and its pre-registration is
written from the smaller budgets before any run of the largest exists, is never rewritten on resume, predicts a
known law's optimum, and refuses to appear after the fact."""
import pathlib
import shutil

import numpy as np
import pytest

from labs import common, trimodal
from mdm_jax import flops
from mdm_jax.errors import UserError
from sweeps.plan import make_plan
from tests.labs.synthetic_runs import SyntheticContext

LAB = pathlib.Path(__file__).parents[2] / "labs" / "isoflop"
MANIFEST = {"seq_len": 256, "vocab": {"text_size": 1024, "image_size": 256, "audio_size": 512}}
FIELDS = trimodal.run_fields("/data/tiny", MANIFEST)
LAWS = {"text": {"E": 3.0, "A": 400.0, "alpha": 0.45, "B": 900.0, "beta": 0.40},
        "image": {"E": 1.5, "A": 200.0, "alpha": 0.50, "B": 1500.0, "beta": 0.45},
        "audio": {"E": 4.0, "A": 150.0, "alpha": 0.35, "B": 600.0, "beta": 0.35}}


def law_losses(cfg, n, d):
  del cfg
  return {m: p["E"] + p["A"] * n ** -p["alpha"] + p["B"] * d ** -p["beta"] for m, p in LAWS.items()}


@pytest.fixture(scope="module")
def lab():
  return common.load_lab(LAB)


@pytest.fixture(scope="module")
def trained(lab, tmp_path_factory):
  """The lab's default grid run once on synthetic runs (the Approach 3 fits dominate the time)."""
  out = tmp_path_factory.mktemp("isoflop")
  ctx = SyntheticContext(LAB, out, losses=law_losses)
  lab.train(ctx, FIELDS)
  return ctx


@pytest.mark.parametrize("scale, sizes, budgets", [("default", 4, 4), ("ci", 3, 3)])
def test_spec_plans_every_size_at_every_budget_within_one_percent(lab, tmp_path, scale, sizes, budgets):
  ctx = common.LabContext(LAB, tmp_path, scale=scale)
  grid = lab.grid(ctx)
  plan = make_plan(lab.spec(ctx, grid["flops"], FIELDS))
  assert len(plan.runs) == sizes * budgets == len({r.run_id for r in plan.runs})
  assert sorted({r.budget for r in plan.runs}) == sorted(grid["flops"])
  for r in plan.runs:
    assert abs(r.flops - r.budget) <= 0.01 * r.budget
    assert r.cfg.data.source == "/data/tiny" and r.cfg.data.seq_len == 256
    assert r.cfg.train.eval_every >= r.cfg.train.steps   # one final evaluation
  held = make_plan(lab.spec(ctx, grid["flops"][-1:], FIELDS))
  assert {r.run_id for r in held.runs} <= {r.run_id for r in plan.runs}   # same runs, whichever spec plans them


def test_prediction_is_written_before_the_largest_budget_and_kept_on_resume(lab, trained, tmp_path):
  ctx = trained
  budgets = lab.grid(ctx)["flops"]
  assert [(c["budgets"], c["prediction_on_disk"]) for c in ctx.calls] == [(budgets[:-1], False), (budgets, True)]
  path = ctx.out / lab.PREDICTION
  pred = lab.runio.read_json(path)
  held = make_plan(lab.spec(ctx, budgets[-1:], FIELDS)).runs
  assert sorted(pred["written_before_runs"]) == sorted(r.run_id for r in held)
  runs = ctx.out / "sweeps" / lab.SWEEP / "runs"
  assert all(path.stat().st_mtime_ns <= (runs / r.run_id / "run.json").stat().st_mtime_ns for r in held)
  assert {m: p["n_fit"] for m, p in pred["modalities"].items()} == {m: 12 for m in (*LAWS, lab.ALL)}

  before = path.read_bytes()
  lab.train(ctx, FIELDS)   # resume: every run is finished, the prediction stays as written
  assert path.read_bytes() == before and ctx.calls[-1]["prediction_on_disk"]

  shutil.copytree(ctx.out, tmp_path, dirs_exist_ok=True)
  (tmp_path / lab.PREDICTION).unlink()   # a prediction made after the largest budget ran is not pre-registered
  with pytest.raises(UserError, match="pre-registered"):
    lab.train(SyntheticContext(LAB, tmp_path, losses=law_losses), FIELDS)


def test_prediction_recovers_a_known_laws_optimum(lab, trained):
  ctx = trained
  pred = lab.runio.read_json(ctx.out / lab.PREDICTION)
  budget = pred["budget"]
  base = lab.spec(ctx, [budget], FIELDS)
  for m, truth in LAWS.items():   # the true optimum by brute force over the family, trainer FLOP accounting
    losses = []
    for width in range(16, 257, 4):
      cfg = base.base.replace(**{f"model.{k}": v for k, v in base.family.model_fields(width).items()})
      n = flops.param_counts(cfg.model, cfg.vocab_size)["total"]
      losses.append(law_losses(cfg, n, budget / flops.train_flops_per_token(cfg))[m])
    assert pred["modalities"][m]["optimum"]["loss"] == pytest.approx(min(losses), rel=1e-3)
    held = {r.run_id: r for r in make_plan(base).runs}
    for run_id, predicted in pred["modalities"][m]["runs"].items():
      r = held[run_id]
      n = flops.param_counts(r.cfg.model, r.cfg.vocab_size)["total"]
      assert predicted == pytest.approx(law_losses(r.cfg, n, r.cfg.total_steps * r.cfg.tokens_per_step)[m], rel=1e-3)
  obs = lab.observed_optimum(lab.tables(ctx.out / "sweeps" / lab.SWEEP)["text"], budget)
  assert obs["loss"] == pytest.approx(min(law_losses(None, n, d)["text"] for n, d in zip(
      *lab.planned_params_tokens(list(held.values())))), rel=0.02)
