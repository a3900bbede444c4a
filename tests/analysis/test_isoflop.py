"""Approach 2 on synthetic Chinchilla isoFLOP grids: centred grids recover a; edge minima are flagged (§5.9.7)."""
import numpy as np
import pandas as pd
import pytest

from analysis import isoflop
from analysis.allocation import allocate
from analysis.table import from_frame
from mdm_jax.errors import UserError
from tests.analysis.conftest import CHINCHILLA_TRUTH

A_TRUE = CHINCHILLA_TRUTH["beta"] / (CHINCHILLA_TRUTH["alpha"] + CHINCHILLA_TRUTH["beta"])


def isoflop_frame(shift=None, width=1.0, sizes=9, budgets=np.geomspace(1e18, 1e22, 7), noise=0.0, seed=0):
  """Per budget, `sizes` models log-spaced over ±width decades around N*(C)·10^shift(C) (shift: per-budget)."""
  rng = np.random.default_rng(seed)
  rows = []
  for i, c in enumerate(budgets):
    centre = allocate(CHINCHILLA_TRUTH, c)["params"] * 10 ** (0.0 if shift is None else shift[i])
    for n in centre * np.geomspace(10**-width, 10**width, sizes):
      d = c / (6 * n)
      loss = CHINCHILLA_TRUTH["E"] + CHINCHILLA_TRUTH["A"] * n ** -CHINCHILLA_TRUTH["alpha"] + \
          CHINCHILLA_TRUTH["B"] * d ** -CHINCHILLA_TRUTH["beta"]
      rows.append({"params": n, "flops": c, "loss": loss * np.exp(noise * rng.standard_normal())})
  return pd.DataFrame(rows)


@pytest.mark.parametrize("vertex", isoflop.VERTICES)
@pytest.mark.parametrize("axis", isoflop.AXES)
def test_centred_grid_recovers_the_exponent(vertex, axis):
  fit = isoflop.fit_isoflop(from_frame(isoflop_frame()), axis=axis, vertex=vertex)
  assert fit.a == pytest.approx(A_TRUE, abs=0.01)
  assert fit.b == pytest.approx(1 - A_TRUE, abs=0.01)
  assert fit.k_params * fit.k_tokens * 6 == pytest.approx(1.0, rel=1e-6)  # C = 6·N·D at every vertex
  assert fit.diagnostics["n_dropped"] == 0 and fit.estimator["axis"] == axis


def test_off_centre_budgets_are_flagged_and_dropped():
  shift = np.array([0, 0, 0, 0, 1.5, -1.5, 0])  # N* lies beyond the sampled ±1 decade for two budgets
  fit = isoflop.fit_isoflop(from_frame(isoflop_frame(shift=shift)))
  assert fit.diagnostics["n_dropped"] == 2
  reasons = [d["edge"] for d in fit.dropped_budgets]
  assert any("largest" in r or "smallest" in r for r in reasons)
  assert any(w.startswith("dropped budget") for w in fit.diagnostics["warnings"])
  assert fit.a == pytest.approx(A_TRUE, abs=0.01)  # the remaining centred budgets still give the exponent


def test_uncentred_sampling_biases_the_intercept_not_the_slope():
  """Open-Athena: off-centre sampling biases the intercept; the parabola vertex moves with it."""
  centred = isoflop.fit_isoflop(from_frame(isoflop_frame(width=1.0)))
  shifted = isoflop.fit_isoflop(from_frame(isoflop_frame(shift=np.full(7, 0.5), width=1.0)))
  assert shifted.a == pytest.approx(centred.a, abs=1e-6)
  assert abs(shifted.k_params / centred.k_params - 1) > 0.01


def test_profile_vertex_of_an_exact_parabola_and_a_concave_profile():
  x = np.linspace(-2, 2, 7)
  v = isoflop.profile_vertex(x, 3 + 0.5 * (x - 0.3) ** 2, "parabola")
  assert v["x_vertex"] == pytest.approx(0.3) and v["loss_vertex"] == pytest.approx(3.0) and v["edge"] is None
  assert isoflop.profile_vertex(x, 3 - 0.5 * x**2, "parabola")["edge"].startswith("profile is not convex")
  assert "distinct" in isoflop.profile_vertex(x[:2], x[:2], "akima")["edge"]


def test_budget_bucketing():
  np.testing.assert_allclose(isoflop.round_significant([1.5e19, 2.4e19, 9.2e18], 1), [2e19, 2e19, 9e18])
  labels = isoflop.bucket_budgets(np.array([9.2e18, 1.0e19, 1.05e19, 3e19, 3.2e19]), 0.25)
  assert len(set(labels[:3])) == 1 and len(set(labels[3:])) == 1 and labels[0] != labels[3]
  with pytest.raises(UserError, match="budget_precision"):
    isoflop.bucket_budgets(np.ones(3), 0)


def test_too_few_budgets_and_bad_options_are_user_errors():
  one_budget = isoflop_frame(budgets=[1e20])
  with pytest.raises(UserError) as e:
    isoflop.fit_isoflop(from_frame(one_budget))
  assert e.value.field == "flops"
  with pytest.raises(UserError, match="axis"):
    isoflop.fit_isoflop(from_frame(isoflop_frame()), axis="width")
  with pytest.raises(UserError, match="vertex"):
    isoflop.fit_isoflop(from_frame(isoflop_frame()), vertex="cubic")
