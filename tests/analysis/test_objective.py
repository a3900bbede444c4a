"""The batched LSE objective against an independent scipy computation, and its analytic gradient."""
import numpy as np
import pytest
from scipy.special import huber, logsumexp

from analysis.objective import LseObjective, loss_surface, to_natural


@pytest.fixture
def problem():
  rng = np.random.default_rng(1)
  n = 40
  return (rng.uniform(15, 25, n), rng.uniform(18, 28, n), np.log(rng.uniform(2, 4, n)),
          rng.normal([5, 6, 0.5, 0.3, 0.3], [1, 1, 0.3, 0.1, 0.1], (6, 5)), rng.integers(0, 3, (6, n)).astype(float))


@pytest.mark.parametrize("loss", ["huber", "mse"])
def test_value_matches_scipy_huber_of_logsumexp(problem, loss):
  log_n, log_d, log_l, x, w = problem
  f, _ = LseObjective(log_n, log_d, log_l, loss=loss, delta=0.05, weights_Rxn=w)(x, np.arange(6))
  for k in range(6):
    a, b, e, alpha, beta = x[k]
    pred = logsumexp([a - alpha * log_n, b - beta * log_d, np.full_like(log_n, e)], axis=0)
    r = log_l - pred
    rho = huber(0.05, r) if loss == "huber" else 0.5 * r**2
    assert f[k] == pytest.approx(np.sum(w[k] * rho), rel=1e-12)


@pytest.mark.parametrize("loss", ["huber", "mse"])
def test_gradient_matches_central_differences(problem, loss):
  log_n, log_d, log_l, x, w = problem
  obj = LseObjective(log_n, log_d, log_l, loss=loss, delta=0.05, weights_Rxn=w)
  rows = np.arange(6)
  _, g = obj(x, rows)
  eps = 1e-6
  for j in range(5):
    step = np.zeros(5)
    step[j] = eps
    numeric = (obj(x + step, rows)[0] - obj(x - step, rows)[0]) / (2 * eps)
    np.testing.assert_allclose(g[:, j], numeric, rtol=1e-6, atol=1e-9)


def test_natural_parameters_and_surface():
  nat = to_natural([np.log(400.0), np.log(2000.0), np.log(1.7), 0.34, 0.28])
  assert nat == pytest.approx({"E": 1.7, "A": 400.0, "B": 2000.0, "alpha": 0.34, "beta": 0.28}, rel=1e-14)
  assert loss_surface(nat, 1e9, 1e11) == pytest.approx(1.7 + 400 * 1e9**-0.34 + 2000 * 1e11**-0.28, rel=1e-14)


def test_overflow_at_a_wild_point_is_infinite_not_an_exception(problem):
  log_n, log_d, log_l, _, _ = problem
  f, _ = LseObjective(log_n, log_d, log_l)(np.array([[800.0, 0.0, 0.0, 0.0, 0.0]]))
  assert not np.isfinite(f[0])
