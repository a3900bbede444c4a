"""The diagnostic checks on their own, against hand-computed answers."""
import numpy as np
import pytest

from analysis import diagnostics as diag


def test_basin_counting_is_relative_with_an_absolute_floor():
  f = np.array([1.0, 1.0 + 5e-7, 1.0 + 2e-6, 2.0, np.nan])
  assert diag.basin_count(f) == 2
  assert diag.basin_count(f * 1e-9) == 2  # scale-free
  assert diag.count_basins(f) == 3
  floor = np.array([5e-31, 9e-31, 3e-30, 1e-3])
  assert diag.basin_count(floor) == 1 and diag.basin_count(floor, atol=1e-20) == 3


def test_parameter_flags():
  flags = diag.parameter_flags(["p", "q", "r"], x_P=[0.0, 2.0, 0.7], x0_P=[0.5, 1.0, 0.7], lower=[0, -9, -9],
                               upper=[9, 9, 9], grid_lo=[0, 0, 0], grid_hi=[1, 1, 1])
  assert flags == {"on_bound": ["p"], "at_grid_edge": ["p", "q"], "at_initial_value": ["r"]}


def test_residual_summary_and_standard_errors():
  r = np.array([0.01, -0.02, 0.005, 0.0])
  s = diag.residual_summary(r, delta=0.008)
  assert s["max_abs"] == 0.02 and s["frac_beyond_delta"] == 0.5 and s["rmse"] == pytest.approx(np.sqrt(np.mean(r**2)))
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2000, 2))
  noise = 0.3 * rng.standard_normal(2000)
  se = diag.approx_standard_errors(x, noise)  # OLS standard errors of a linear model with σ = 0.3
  np.testing.assert_allclose(se, 0.3 * np.sqrt(np.diag(np.linalg.inv(x.T @ x))), rtol=0.1)
  assert diag.condition_number(np.diag([1.0, 10.0])) == pytest.approx(100.0)


def test_warnings_are_plain_sentences():
  w = diag.warnings_for({"on_bound": ["alpha"], "at_grid_edge": [], "at_initial_value": ["E"]}, "max_iter", 10, 1,
                        {"B": 0.6})
  assert len(w) == 5 and all(isinstance(s, str) and "\n" not in s for s in w)
  assert diag.warnings_for({}, "converged_objective", 4500, 900) == []
