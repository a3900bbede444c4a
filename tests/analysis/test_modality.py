"""Per-modality laws: one fit per modality, each with its own diagnostics and recorded modality."""
import pandas as pd
import pytest

from analysis.modality import fit_per_modality
from analysis.table import from_frame
from mdm_jax.errors import UserError
from tests.analysis.conftest import synthetic_frame

TEXT = {"E": 1.8, "A": 400.0, "B": 2000.0, "alpha": 0.34, "beta": 0.28}
IMAGE = {"E": 3.1, "A": 150.0, "B": 900.0, "alpha": 0.25, "beta": 0.31}


def test_each_modality_recovers_its_own_law():
  df = pd.concat([synthetic_frame(TEXT).assign(modality="text"), synthetic_frame(IMAGE).assign(modality="image")])
  fits = fit_per_modality(from_frame(df, params_convention="total"), "vpnls")
  assert sorted(fits) == ["image", "text"]
  for name, truth in (("text", TEXT), ("image", IMAGE)):
    for key, value in truth.items():
      assert fits[name].params[key] == pytest.approx(value, rel=1e-4)
    assert f"modality = {name}" in fits[name].input["notes"]
    assert fits[name].input["conventions"]["params"] == "total" and "status" in fits[name].diagnostics


def test_modality_column_and_method_are_checked():
  with pytest.raises(UserError, match="modality"):
    fit_per_modality(from_frame(synthetic_frame(TEXT)))
  with pytest.raises(UserError, match="method"):
    fit_per_modality(from_frame(synthetic_frame(TEXT).assign(modality="text")), "approach9")
