"""Pre-registration: fit below a compute threshold, predict held-out runs; relative errors computed correctly."""
import numpy as np
import pytest

from analysis import prediction
from analysis.allocation import allocate
from analysis.table import from_frame
from mdm_jax.errors import UserError
from tests.analysis.conftest import CHINCHILLA_TRUTH, synthetic_frame
from tests.analysis.test_isoflop import isoflop_frame


def _table(noise=0.0):
  df = synthetic_frame(CHINCHILLA_TRUTH, noise=noise, seed=4)
  df["flops"] = 6 * df.params * df.tokens
  return from_frame(df)


def test_noise_free_law_predicts_held_out_runs_exactly():
  out = prediction.preregister(_table(), threshold_flops=1e19, method="vpnls")
  assert out["n_fit"] + out["n_held_out"] == 64 and out["n_held_out"] > 5
  assert out["loss"]["max_abs"] < 1e-6


def test_relative_errors_are_signed_and_summarised():
  e = prediction.relative_errors([1.1, 1.8], [1.0, 2.0])
  assert e["relative_error"] == pytest.approx([0.1, -0.1]) and e["mean_abs"] == pytest.approx(0.1)
  assert e["bias"] == pytest.approx(0.0, abs=1e-12) and e["n"] == 2


def test_approach2_predicts_held_out_vertices():
  table = from_frame(isoflop_frame(noise=0.0))
  out = prediction.preregister(table, threshold_flops=5e21, method="approach2")
  assert len(out["held_out_budgets"]) == 1 and out["params_opt"]["max_abs"] < 0.02


def test_predict_optimum_is_the_closed_form(chinchilla_fit):
  pred = prediction.predict_optimum(chinchilla_fit, [1e22, 1e23])
  ref = allocate(chinchilla_fit.params, np.array([1e22, 1e23]))
  assert pred["loss"] == pytest.approx(ref["loss"].tolist()) and pred["params"] == pytest.approx(ref["params"].tolist())


def test_thresholds_outside_the_data_are_user_errors():
  with pytest.raises(UserError, match="threshold_flops"):
    prediction.preregister(_table(), threshold_flops=1e40)
  with pytest.raises(UserError, match="method"):
    prediction.preregister(_table(), threshold_flops=1e19, method="approach1")
