"""VPNLS: exact NNLS against scipy, envelope gradients, exact recovery and its far better conditioning."""
import numpy as np
import pytest
from scipy import optimize

from analysis import vpnls
from analysis.table import from_frame
from tests.analysis.conftest import CHINCHILLA_TRUTH, synthetic_frame


def test_nnls3_matches_scipy_including_active_constraints():
  rng = np.random.default_rng(0)
  phi = rng.uniform(0, 1, (50, 30, 3))
  y = rng.normal(0, 1, 30)  # random targets: many solutions need zeros
  w = rng.integers(0, 3, (50, 30)).astype(float)
  coef = vpnls.nnls3(phi, y, w)
  n_active = 0
  for k in range(50):
    sw = np.sqrt(w[k])
    ref, _ = optimize.nnls(phi[k] * sw[:, None], y * sw)
    np.testing.assert_allclose(coef[k], ref, atol=1e-8)
    n_active += np.sum(ref == 0)
  assert n_active > 10  # the constrained cases were exercised


def test_envelope_gradient_matches_finite_differences(chinchilla_table):
  obj = vpnls.make_objective(chinchilla_table)
  x = np.array([[0.36, 0.43], [0.5, 0.2]])
  _, g = obj(x)
  for j in range(2):
    step = np.zeros(2)
    step[j] = 1e-6
    numeric = (obj(x + step)[0] - obj(x - step)[0]) / 2e-6
    np.testing.assert_allclose(g[:, j], numeric, rtol=1e-5)


def test_noise_free_recovery_and_conditioning():
  fit = vpnls.fit_vpnls(from_frame(synthetic_frame(CHINCHILLA_TRUTH)))
  for key, value in CHINCHILLA_TRUTH.items():
    assert fit.params[key] == pytest.approx(value, rel=1e-4)
  d = fit.diagnostics
  assert d["status"].startswith("converged") and not d["at_grid_edge"]
  assert d["condition_number_2d"] < 1e3 < 1e9 < d["condition_number_5d"]  # Open-Athena: ~11 vs ~3.5e11
  assert fit.estimator["space"] == "linear" and fit.method == "vpnls"


def test_grid_edge_is_flagged():
  fit = vpnls.fit_vpnls(from_frame(synthetic_frame(CHINCHILLA_TRUTH)), grid_alpha=np.linspace(0.5, 1.0, 6))
  assert fit.diagnostics["at_grid_edge"] == ["alpha"]
  assert any("edge of the start grid" in w for w in fit.diagnostics["warnings"])


def test_chinchilla_vpnls_is_a_different_estimator_with_similar_exponents(chinchilla_table, chinchilla_fit):
  fit = vpnls.fit_vpnls(chinchilla_table)
  assert fit.alpha == pytest.approx(chinchilla_fit.alpha, abs=0.03)
  assert fit.a == pytest.approx(chinchilla_fit.a, abs=0.05)
  assert fit.objective > 0 and fit.diagnostics["status"].startswith("converged")
