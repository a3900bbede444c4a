"""The noise-schedule lab: its sweep plans schedule × size × seed on the prepared data, and its summaries (seed
spread, variance ratios, invariance z) agree with the same numbers computed by hand."""
import itertools
import pathlib

import numpy as np
import pandas as pd
import pytest

from labs import common, trimodal
from sweeps.plan import make_plan

LAB = pathlib.Path(__file__).parents[2] / "labs" / "noise_schedule"
MANIFEST = {"seq_len": 256, "vocab": {"text_size": 1024, "image_size": 256, "audio_size": 512}}


@pytest.fixture(scope="module")
def lab():
  return common.load_lab(LAB)


@pytest.mark.parametrize("scale, runs, sizes, schedules", [
    ("default", 12, {(32, 1), (64, 2)}, {"linear", "cosine", "polynomial"}),
    ("ci", 2, {(32, 1)}, {"linear", "cosine"})])
def test_spec_plans_each_schedule_at_each_size_and_seed_on_the_prepared_data(lab, tmp_path, scale, runs, sizes,
                                                                              schedules):
  ctx = common.LabContext(LAB, tmp_path, scale=scale)
  plan = make_plan(lab.spec(ctx, trimodal.run_fields("/data/tiny", MANIFEST)))
  cfgs = [r.cfg for r in plan.runs]
  assert len(cfgs) == runs and len({r.run_id for r in plan.runs}) == runs
  assert {(c.model.d_model, c.model.n_layers) for c in cfgs} == sizes
  assert {c.diffusion.schedule for c in cfgs} == schedules
  combos = {(c.model.d_model, c.diffusion.schedule, c.train.seed) for c in cfgs}
  assert len(combos) == runs   # a full product: no point planned twice
  for c in cfgs:
    assert c.data.source == "/data/tiny" and c.data.seq_len == 256 and c.data.mixture == (0.4, 0.3, 0.3)
    assert (c.data.text_vocab_size, c.data.image_vocab_size, c.data.audio_vocab_size) == (1024, 256, 512)
    assert c.train.eval_every == c.train.steps   # one final evaluation per run


def _frame(rng):
  rows = []
  for run, (trained, seed) in enumerate(itertools.product(("linear", "cosine"), (0, 1))):
    for m, ev in itertools.product(("text", "image"), ("linear", "cosine", "polynomial", "loglinear")):
      rows.append({"run_id": f"r{run}", "schedule": trained, "size": "d32×1", "params": 1e5, "seed": seed,
                   "modality": m, "eval_schedule": ev, "elbo": rng.normal(5, 0.1), "se_mc": rng.uniform(0.01, 0.05),
                   "single_t_var": rng.uniform(10, 100), "trainer_eval": 5.0})
  return pd.DataFrame(rows)


def test_summaries_match_a_hand_computation(lab):
  df = _frame(np.random.default_rng(0))
  summary = lab.elbo_summary(df).set_index(["modality", "schedule"])
  for (m, trained), part in df[df.eval_schedule == "linear"].groupby(["modality", "schedule"]):
    values = part.elbo.to_numpy()
    assert summary.loc[(m, trained), "elbo"] == pytest.approx(values.mean())
    assert summary.loc[(m, trained), "spread"] == pytest.approx(np.ptp(values) / 2)
  var, ratio = lab.variance_summary(df)
  assert list(var.columns) == ["linear", "cosine", "polynomial", "loglinear"]
  for m in ("text", "image"):
    mine = df[df.modality == m]
    for s in var.columns:
      v = mine[mine.eval_schedule == s].sort_values("run_id").single_t_var.to_numpy()
      lin = mine[mine.eval_schedule == "linear"].sort_values("run_id").single_t_var.to_numpy()
      assert var.loc[m, s] == pytest.approx(np.prod(v) ** (1 / len(v)))
      assert ratio.loc[m, s] == pytest.approx(np.prod(v / lin) ** (1 / len(v)))
  z = lab.invariance(df)
  row = df[(df.run_id == "r2") & (df.modality == "image")].set_index("eval_schedule")   # r2 trained with cosine
  want = (row.elbo["cosine"] - row.elbo["linear"]) / np.hypot(row.se_mc["cosine"], row.se_mc["linear"])
  assert z.loc[("r2", "image")] == pytest.approx(want) and len(z) == 4   # linear-trained runs are their own yardstick
