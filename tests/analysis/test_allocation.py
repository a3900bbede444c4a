"""Closed-form allocation against the README targets and an independent numerical minimisation."""
import numpy as np
import pytest
from scipy import optimize

from analysis import allocation
from mdm_jax.errors import UserError
from tests.analysis.conftest import EPOCH


def test_epoch_estimate_reproduces_the_published_allocation():
  out = allocation.allocate(EPOCH, 5.88e23)
  assert out["params"] == pytest.approx(7.30e10, rel=0.01)
  assert out["tokens"] == pytest.approx(1.34e12, rel=0.01)
  assert out["tokens_per_param"] == pytest.approx(18.4, rel=0.01)
  assert out["a"] == pytest.approx(0.5126, abs=5e-4)


@pytest.mark.parametrize("flops", [1e19, 3.8e25])
def test_closed_form_matches_numerical_minimum_over_n(flops):
  def loss_at(log_n):
    n = np.exp(log_n)
    return EPOCH["E"] + EPOCH["A"] * n ** -EPOCH["alpha"] + EPOCH["B"] * (flops / (6 * n)) ** -EPOCH["beta"]
  res = optimize.minimize_scalar(loss_at, bounds=(5, 40), method="bounded", options={"xatol": 1e-12})
  out = allocation.allocate(EPOCH, flops)
  assert out["params"] == pytest.approx(np.exp(res.x), rel=1e-5)
  assert out["loss"] == pytest.approx(res.fun, rel=1e-12)
  assert out["params"] * out["tokens"] * 6 == pytest.approx(flops, rel=1e-12)


def test_flops_for_loss_inverts_the_frontier():
  target = float(allocation.allocate(EPOCH, 1e22)["loss"])
  assert allocation.flops_for_loss(EPOCH, target) == pytest.approx(1e22, rel=1e-9)
  with pytest.raises(UserError, match="target_loss"):
    allocation.flops_for_loss(EPOCH, EPOCH["E"])


def test_rounded_parameters_are_flagged_and_matter():
  """§5.9 pitfall 2: rounded exponents move the allocation far out; the helper names rounded inputs."""
  hoffmann_rounded = {"A": 406.4, "B": 410.7, "E": 1.69, "alpha": 0.34, "beta": 0.28}
  assert allocation.rounded_parameters(hoffmann_rounded) == ["E", "alpha", "beta"]
  unrounded = {"A": 406.4, "B": 410.7, "E": 1.69, "alpha": 0.33917084, "beta": 0.2849083}
  assert allocation.rounded_parameters(unrounded) == ["E"]
  shift = allocation.allocate(unrounded, 3.8e25)["tokens"] / allocation.allocate(hoffmann_rounded, 3.8e25)["tokens"]
  assert abs(shift - 1) > 0.05


def test_degenerate_law_is_a_user_error():
  with pytest.raises(UserError, match="alpha"):
    allocation.allocate({**EPOCH, "alpha": 0.0}, 1e20)
  with pytest.raises(UserError, match="beta"):
    allocation.exponents({"E": 1, "A": 1, "B": 1, "alpha": 1})
