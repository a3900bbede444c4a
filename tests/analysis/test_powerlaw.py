"""OLS power laws against exact data and numpy's own least squares."""
import numpy as np
import pytest

from analysis import powerlaw
from mdm_jax.errors import UserError


def test_exact_power_law():
  x = np.geomspace(1e18, 1e22, 6)
  out = powerlaw.fit_power_law(x, 0.1 * x**0.5)
  assert out["exponent"] == pytest.approx(0.5, abs=1e-12) and out["prefactor"] == pytest.approx(0.1, rel=1e-9)
  assert out["r2"] == pytest.approx(1.0)


def test_standard_errors_match_the_textbook_formula():
  rng = np.random.default_rng(0)
  x = np.linspace(0, 10, 50)
  y = 1.0 + 2.0 * x + rng.normal(0, 0.5, 50)
  design = np.stack([np.ones_like(x), x], 1)
  out = powerlaw.ols(design, y)
  resid = y - design @ out["coef"]
  se = np.sqrt(np.diag(resid @ resid / 48 * np.linalg.inv(design.T @ design)))
  np.testing.assert_allclose(out["se"], se)
  np.testing.assert_allclose(out["coef"], np.polyfit(x, y, 1)[::-1])


def test_degenerate_inputs():
  with pytest.raises(UserError, match="2 distinct"):
    powerlaw.fit_power_law([1.0, 1.0], [2.0, 3.0], "flops")
  with pytest.raises(UserError, match="positive"):
    powerlaw.fit_power_law([1.0, 2.0], [-2.0, 3.0])
  assert np.isnan(powerlaw.fit_power_law([1.0, 2.0], [2.0, 3.0])["se_exponent"])
