"""The batched L-BFGS against scipy's, problem by problem, plus bounds, scale invariance and status codes."""
import numpy as np
from scipy import optimize

from analysis import lbfgs


def _rosen_batch(centres_Rx2):
  """Shifted 2-D Rosenbrock problems, one centre per row; returns the batched fun and a scalar one."""
  def one(x, c):
    u, v = x[..., 0] - c[..., 0], x[..., 1] - c[..., 1]
    f = (1 - u) ** 2 + 100 * (v - u**2) ** 2
    gu = -2 * (1 - u) - 400 * u * (v - u**2)
    gv = 200 * (v - u**2)
    return f, np.stack([gu, gv], -1)
  return (lambda x, rows: one(x, centres_Rx2[rows])), one


def test_matches_scipy_per_problem():
  rng = np.random.default_rng(0)
  centres = rng.normal(size=(16, 2))
  fun, one = _rosen_batch(centres)
  x0 = rng.normal(size=(16, 2)) * 2
  res = lbfgs.minimize(fun, x0, ftol=1e-15, gtol=1e-14)
  for k in range(16):
    ref = optimize.minimize(lambda x: one(x, centres[k]), x0[k], jac=True, method="L-BFGS-B",
                            options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 5000})
    np.testing.assert_allclose(res.x[k], ref.x, atol=1e-6)
    np.testing.assert_allclose(res.x[k], centres[k] + 1.0, atol=1e-6)  # analytic minimum (1, 1) + centre


def test_bounds_give_the_clipped_minimum_of_a_separable_quadratic():
  target = np.array([[3.0, -2.0, 0.5]])
  fun = lambda x, rows: (np.sum((x - target) ** 2, 1), 2 * (x - target))
  res = lbfgs.minimize(fun, np.zeros((1, 3)), lower=[-1, -1, -1], upper=[1, 1, 1])
  np.testing.assert_allclose(res.x[0], [1.0, -1.0, 0.5], atol=1e-9)
  assert res.status[0] in (lbfgs.CONVERGED_GRAD, lbfgs.CONVERGED_F, lbfgs.STALLED)


def test_scaling_the_objective_changes_nothing():
  """Relative stopping rules (METHOD §5.9 pitfall 1): f, 1e-6·f and 1e6·f give the same minimiser, and a
  power-of-two scale (exact in floating point) gives bit-identical iterates."""
  centres = np.array([[0.3, -0.2], [1.0, 2.0]])
  fun, _ = _rosen_batch(centres)
  x0 = np.array([[-1.5, 2.0], [0.0, 0.0]])

  def run(scale):
    return lbfgs.minimize(lambda x, rows: tuple(scale * v for v in fun(x, rows)), x0)
  ref = run(1.0)
  for scale in (1e-6, 1e6):
    np.testing.assert_allclose(run(scale).x, ref.x, atol=1e-9)
  for scale in (2.0**-30, 2.0**30):
    exact = run(scale)
    np.testing.assert_array_equal(exact.x, ref.x)
    np.testing.assert_array_equal(exact.n_iter, ref.n_iter)


def test_status_codes_report_unfinished_and_impossible_problems():
  fun, _ = _rosen_batch(np.zeros((2, 2)))
  res = lbfgs.minimize(fun, np.array([[-1.2, 1.0], [0.5, 0.5]]), max_iter=3)
  assert list(res.status) == [lbfgs.MAX_ITER, lbfgs.MAX_ITER]
  assert res.status_counts() == {"max_iter": 2}
  nan_fun = lambda x, rows: (np.where(x[:, 0] > 5, np.nan, np.sum(x**2, 1)), 2 * x)
  res = lbfgs.minimize(nan_fun, np.array([[10.0, 1.0], [1.0, 1.0]]))
  assert res.status[0] == lbfgs.STALLED and np.allclose(res.x[0], [10.0, 1.0])
  assert res.status[1] != lbfgs.STALLED and np.allclose(res.x[1], 0.0, atol=1e-6)


def test_projected_gradient_is_zero_only_where_a_bound_blocks():
  pg = lbfgs.projected_gradient(np.array([[0.0, 0.0, 0.5, 1.0]]), np.array([[1.0, -1.0, 1.0, -1e-30]]),
                                 np.zeros(4), np.ones(4))
  np.testing.assert_array_equal(pg, [[0.0, -1.0, 1.0, 0.0]])
  tiny = lbfgs.projected_gradient(np.array([[1e6]]), np.array([[1e-20]]), np.zeros(1), np.full(1, np.inf))
  assert tiny[0, 0] == 1e-20  # x − P(x − g) would cancel to 0 here
