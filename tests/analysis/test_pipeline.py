"""run_fit: exclusions with their sensitivity, frontier at requested budgets, loaders by path type."""
import json

import numpy as np
import pytest

from analysis import pipeline
from analysis.allocation import allocate
from tests.analysis.conftest import CHINCHILLA_TRUTH, synthetic_frame
from tests.analysis.test_parametric import SMALL_GRID


def test_run_fit_records_exclusions_sensitivity_and_frontier(tmp_path):
  df = synthetic_frame(CHINCHILLA_TRUTH, noise=0.002, seed=3)
  df.loc[0, "loss"] *= 1.5  # an outlier the exclusion removes
  df.to_csv(tmp_path / "t.csv", index=False)
  table = pipeline.load_runs(tmp_path / "t.csv", convention="total")
  fit, boot, paths = pipeline.run_fit(table, "approach3", tmp_path / "out", exclude_top_loss=1, at_flops=[1e21, 1e23],
                                      figure_formats=(), starts=SMALL_GRID)
  assert boot is None and [p.name for p in paths] == ["fit.json"]
  saved = json.loads(paths[0].read_text())
  assert saved["input"]["exclusions"][0]["rows"] == [0]
  sens = saved["diagnostics"]["exclusion_sensitivity"]
  assert sens["rule"] == "exclude_top_loss=1" and set(sens["with_exclusion"]) >= {"alpha", "beta", "a"}
  ref = allocate(fit.params, 1e23)
  assert saved["frontier"][1]["params"] == pytest.approx(float(ref["params"]))
  assert saved["frontier"][1]["loss"] == pytest.approx(float(ref["loss"]))


def test_power_law_frontier_and_unknown_method(tmp_path):
  from tests.analysis.test_isoflop import isoflop_frame
  from analysis.table import from_frame
  fit, _, _ = pipeline.run_fit(from_frame(isoflop_frame()), "approach2", at_flops=[1e22])
  assert fit.frontier[0]["params"] == pytest.approx(fit.k_params * 1e22**fit.a)
  assert "loss" not in fit.frontier[0]
  with pytest.raises(pipeline.UserError, match="method"):
    pipeline.run_fit(from_frame(isoflop_frame()), "approach5")


def test_load_runs_dispatches_on_the_path(tmp_path):
  from tests.analysis.test_rundirs import _write_run
  _write_run(tmp_path / "sweep", "a")
  assert pipeline.load_runs(tmp_path / "sweep").params_convention == "total"
  synthetic_frame(CHINCHILLA_TRUTH).to_parquet(tmp_path / "t.parquet")
  assert len(pipeline.load_runs(tmp_path / "t.parquet")) == 64
  assert np.isfinite(pipeline.load_runs(tmp_path / "t.parquet").column("flops")).all()
