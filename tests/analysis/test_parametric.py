"""Approach 3 on the public Chinchilla points (README recipe and tolerances), synthetic recovery, and the §5.9
pitfalls the fit guards against: mean vs sum (1), too few starts (3), silent failures (4), poor identification (5).
Exclusions (6) are in test_sensitivity.py."""
import numpy as np
import pytest
from scipy import optimize

from analysis import lbfgs, parametric
from analysis.table import from_frame
from tests.analysis.conftest import CHINCHILLA_TRUTH, synthetic_frame

# 16 starts: enough to reach the best basin on these data (the full 4,500 grid is tested once, on Chinchilla).
SMALL_GRID = {"a": (5, 20), "b": (5, 20), "e": (0.0,), "alpha": (0.25, 0.75), "beta": (0.25, 0.75)}


def test_chinchilla_plain_grid_fit_reproduces_the_published_values(chinchilla_fit):
  f = chinchilla_fit
  assert f.alpha == pytest.approx(0.347313, abs=2e-3)
  assert f.beta == pytest.approx(0.367183, abs=2e-3)
  assert f.E == pytest.approx(1.81724, abs=2e-3)
  assert np.log(f.A) == pytest.approx(np.log(477.84), abs=0.02)
  assert np.log(f.B) == pytest.approx(np.log(2143.9), abs=0.05)
  assert f.objective == pytest.approx(0.00101827, abs=1e-8)
  assert f.a == pytest.approx(0.5126, abs=5e-3)
  d = f.diagnostics
  assert d["n_starts"] == 4500 and d["status"].startswith("converged")
  assert d["best_basin_count"] > 100 and d["n_basins"] > 1
  assert not (d["on_bound"] or d["at_grid_edge"] or d["at_initial_value"])
  assert f.input["conventions"] == {"params": "total", "flops": "given"}
  assert any("tokens derived" in note for note in f.input["notes"])


def test_noise_free_surface_is_recovered_exactly():
  fit = parametric.fit_approach3(from_frame(synthetic_frame(CHINCHILLA_TRUTH)), starts=SMALL_GRID)
  for key, value in CHINCHILLA_TRUTH.items():
    assert fit.params[key] == pytest.approx(value, rel=1e-4)
  assert fit.diagnostics["status"].startswith("converged") and fit.diagnostics["best_basin_count"] > 1


def test_scaling_the_objective_leaves_the_fit_unchanged(chinchilla_table):
  """Pitfall 1: sum, mean (÷240) and 1e6·sum give one optimum, because the stopping rules are relative."""
  fits = [parametric.fit_approach3(chinchilla_table, starts=SMALL_GRID, reduction=r) for r in ("sum", "mean")]
  obj = parametric.make_objective(chinchilla_table)
  obj.scale = 1e6
  scaled = parametric.lbfgs.minimize(obj, parametric.start_grid(SMALL_GRID), *parametric.box(None))
  x_scaled = scaled.x[np.argmin(scaled.f)]
  for fit in fits[1:]:
    for key in ("E", "alpha", "beta"):
      assert fit.params[key] == pytest.approx(fits[0].params[key], rel=1e-6)
  np.testing.assert_allclose(x_scaled, fits[0].diagnostics["x_log"], rtol=1e-5)
  assert fits[1].objective * len(chinchilla_table) == pytest.approx(fits[0].objective, rel=1e-9)


def test_scipy_defaults_with_a_mean_objective_stop_early(chinchilla_table):
  """The evidence behind pitfall 1: scipy's absolute tolerance stops a mean-Huber fit near its start."""
  obj = parametric.make_objective(chinchilla_table, reduction="mean")
  start = np.array([5.0, 5.0, 0.5, 0.5, 0.5])
  ref = optimize.minimize(lambda x: tuple(v[0] for v in obj(x[None])), start, jac=True, method="L-BFGS-B")
  ours = parametric.fit_approach3(chinchilla_table, starts=start[None], reduction="mean")
  assert ref.fun > 1.5 * ours.objective
  assert ref.nit < ours.diagnostics["iterations_best"]


def test_a_single_start_lands_elsewhere_and_is_flagged(chinchilla_table, chinchilla_fit):
  """Pitfall 3: one start can converge to a different (α, β) with a worse objective; the grid finds the best."""
  one = parametric.fit_approach3(chinchilla_table, starts=np.array([[25.0, 0.0, 0.0, 1.5, 1.5]]))
  assert one.objective > chinchilla_fit.objective * 1.01
  assert abs(one.alpha - chinchilla_fit.alpha) + abs(one.beta - chinchilla_fit.beta) > 0.01
  assert any("only 1 starts" in w for w in one.diagnostics["warnings"])


def test_silent_failures_are_flagged(chinchilla_table, chinchilla_fit):
  """Pitfall 4: unconverged status, a parameter on a bound, outside the start grid, or never moved."""
  stopped = parametric.fit_approach3(chinchilla_table, starts=SMALL_GRID, max_iter=2)
  assert stopped.diagnostics["status"] == "max_iter"
  assert any("did not converge" in w for w in stopped.diagnostics["warnings"])
  bounded = parametric.fit_approach3(chinchilla_table, starts=SMALL_GRID, bounds={"alpha": (0.0, 0.3)})
  assert bounded.diagnostics["on_bound"] == ["alpha"]
  at_optimum = np.array(chinchilla_fit.diagnostics["x_log"])[None]
  idle = parametric.fit_approach3(chinchilla_table, starts=at_optimum)
  assert set(idle.diagnostics["at_initial_value"]) == {"A", "B", "E", "alpha", "beta"}
  steep = {**CHINCHILLA_TRUTH, "alpha": 3.0}  # the truth lies beyond the grid's alpha values (0.25, 0.75)
  outside = parametric.fit_approach3(from_frame(synthetic_frame(steep, n_range=(1e2, 1e4))), starts=SMALL_GRID)
  assert "alpha" in outside.diagnostics["at_grid_edge"]


def test_poorly_identified_b_is_reported(chinchilla_fit):
  """Pitfall 5: B's relative error dwarfs that of the exponents; the fit says so."""
  se = chinchilla_fit.diagnostics["approx_se_log"]
  assert se["b"] > 5 * max(se["alpha"], se["beta"])
  assert any(w.startswith("B is poorly identified") for w in chinchilla_fit.diagnostics["warnings"])


def test_bad_starts_and_options_are_user_errors(chinchilla_table):
  from mdm_jax.errors import UserError
  with pytest.raises(UserError, match="starts"):
    parametric.fit_approach3(chinchilla_table, starts=np.zeros((3, 4)))
  with pytest.raises(UserError, match="loss"):
    parametric.fit_approach3(chinchilla_table, loss="l1")
  with pytest.raises(UserError, match="grid"):
    parametric.start_grid({"a": (0,)})


def _batch(f, status):
  f = np.asarray(f, float)
  return lbfgs.BatchResult(x=np.zeros((f.size, 5)), f=f, grad=np.zeros((f.size, 5)), status=np.asarray(status),
                           n_iter=np.zeros(f.size, int), n_eval=0)


def test_a_stalled_best_start_is_reported_through_a_converged_start_of_the_same_basin():
  stalled, converged = lbfgs.STALLED, lbfgs.CONVERGED_F
  same_basin = _batch([2.0, 1.0, 1.0 + 1e-9, 1.0 + 2e-9], [converged, stalled, stalled, converged])
  assert parametric.best_start(same_basin, floor=0.0) == 3
  other_basin = _batch([1.5, 1.0, 1.2], [converged, stalled, converged])
  assert parametric.best_start(other_basin, floor=0.0) == 1   # nothing converged agrees: the stall stays visible
  assert parametric.best_start(_batch([1.0, 0.5], [converged, converged]), floor=0.0) == 1
