"""fit.json: the issue's plain keys, unrounded round trip (§5.9 pitfall 2), strict JSON, convention checks."""
import json
import math

import numpy as np
import pytest

from analysis import results
from analysis.isoflop import fit_isoflop
from analysis.table import from_frame
from mdm_jax.errors import UserError
from tests.analysis.test_isoflop import isoflop_frame


def test_parametric_round_trip_is_exact(chinchilla_fit, tmp_path):
  path = results.write_fit_json(chinchilla_fit, tmp_path)
  back = results.read_fit_json(path)
  for key in ("E", "A", "B", "alpha", "beta", "objective", "a", "b"):
    assert back[key] == getattr(chinchilla_fit, key)  # bit-exact: nothing rounded on the way
  assert back["a"] == back["beta"] / (back["alpha"] + back["beta"])
  assert back["conventions"] == {"params": "total", "flops": "given"}
  assert back["estimator"]["delta"] == 1e-3 and back["estimator"]["reduction"] == "sum"
  assert back["input"]["exclusions"][0]["rule"].startswith("exclude_top_loss=5")
  assert {"status", "best_basin_count", "on_bound", "residuals", "warnings"} <= set(back["diagnostics"])
  text = path.read_text()
  assert "NaN" not in text and "Infinity" not in text  # strict JSON: infinite bounds are null
  assert back["estimator"]["bounds"]["a"] == [None, None]


def test_isoflop_keys(tmp_path):
  fit = fit_isoflop(from_frame(isoflop_frame()))
  back = results.read_fit_json(results.write_fit_json(fit, tmp_path))
  assert {"vertices", "a", "b", "k_params", "k_tokens", "dropped_budgets", "diagnostics"} <= set(back)
  assert back["vertices"] == back["points"] and len(back["vertices"]) == 7
  assert back["a"] == fit.a


def test_plain_converts_numpy_and_non_finite():
  out = results.plain({"x": np.float32(1.5), "y": np.array([1, 2]), "z": math.inf, "w": (np.int64(3), np.bool_(1))})
  assert out == {"x": 1.5, "y": [1, 2], "z": None, "w": [3, True]}
  json.dumps(out, allow_nan=False)


def test_fits_in_different_conventions_are_not_compared():
  results.check_comparable({"conventions": {"params": "total", "flops": "6ND"}},
                           {"conventions": {"params": "total", "flops": "6ND"}})
  with pytest.raises(UserError, match="conventions.params"):
    results.check_comparable({"conventions": {"params": "total"}}, {"conventions": {"params": "non_embedding"}})


def test_unreadable_fit_json(tmp_path):
  (tmp_path / "fit.json").write_text("{")
  with pytest.raises(UserError, match="fit.json"):
    results.read_fit_json(tmp_path / "fit.json")
