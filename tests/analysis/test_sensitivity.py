"""Pitfall 6: an exclusion rule is stored together with the fit without it."""
import pytest

from analysis import parametric, sensitivity
from analysis.table import load_table
from tests.analysis.conftest import CHINCHILLA_COLUMNS, CHINCHILLA_CSV
from tests.analysis.test_parametric import SMALL_GRID


def test_keeping_the_top_five_moves_beta_and_b(chinchilla_table):
  full = load_table(CHINCHILLA_CSV, columns=CHINCHILLA_COLUMNS)
  out = sensitivity.exclusion_sensitivity(full, parametric.fit_approach3, 5, starts=SMALL_GRID)
  assert out["with_exclusion"]["beta"] == pytest.approx(0.367183, abs=2e-3)
  assert abs(out["without_exclusion"]["beta"] - out["with_exclusion"]["beta"]) > 0.05  # "substantially"
  assert out["relative_change_without"]["B"] > 2.0  # "several-fold"
  assert out["rule"] == "exclude_top_loss=5"
  assert out["relative_change_without"]["alpha"] == pytest.approx(
      out["without_exclusion"]["alpha"] / out["with_exclusion"]["alpha"] - 1)
