"""Run-table validation: every bad table is a one-line UserError naming the column; derivations are recorded."""
import numpy as np
import pandas as pd
import pytest

from analysis import table as table_lib
from mdm_jax.errors import UserError


def _frame(**overrides):
  df = pd.DataFrame({"params": [1e8, 2e8, 4e8], "tokens": [2e9, 4e9, 8e9], "flops": [1.2e18, 4.8e18, 1.92e19],
                     "loss": [3.1, 2.9, 2.7]})
  for k, v in overrides.items():
    if v is None:
      df = df.drop(columns=k)
    else:
      df[k] = v
  return df


@pytest.mark.parametrize("missing, derived", [("tokens", "tokens derived"), ("params", "params derived"),
                                              ("flops", "flops derived")])
def test_one_missing_column_is_derived_through_6nd_and_noted(missing, derived):
  t = table_lib.from_frame(_frame(**{missing: None}))
  np.testing.assert_allclose(t.column("flops"), 6 * t.column("params") * t.column("tokens"), rtol=1e-12)
  assert any(note.startswith(derived) for note in t.notes)
  assert t.flops_convention == ("6ND" if missing == "flops" else "given")


@pytest.mark.parametrize("overrides, column, text", [
    ({"params": [1e8, -1.0, 4e8]}, "params", "<= 0"),
    ({"tokens": [2e9, 0.0, 8e9]}, "tokens", "<= 0"),
    ({"flops": [1e18, 2e18, -3e18]}, "flops", "<= 0"),
    ({"loss": [3.1, np.nan, 2.7]}, "loss", "NaN"),
    ({"loss": [3.1, "abc", 2.7]}, "loss", "not numbers"),
    ({"params": [1e8, np.inf, 4e8]}, "params", "infinite"),
    ({"loss": None}, "loss", "missing"),
    ({"params": None, "tokens": None}, "params", "missing"),
    ({"mix_text": [0.5, -0.1, 1.0]}, "mix_text", ">= 0"),
])
def test_bad_tables_name_the_column(overrides, column, text):
  with pytest.raises(UserError) as e:
    table_lib.from_frame(_frame(**overrides))
  assert e.value.field == column and text in str(e.value) and "\n" not in str(e.value)


def test_csv_and_parquet_load_the_same(tmp_path):
  df = _frame(run_id=["a", "b", "c"])
  df.to_csv(tmp_path / "t.csv", index=False)
  df.to_parquet(tmp_path / "t.parquet")
  a, b = table_lib.load_table(tmp_path / "t.csv"), table_lib.load_table(tmp_path / "t.parquet")
  pd.testing.assert_frame_equal(a.df, b.df)
  assert a.source.endswith("t.csv")


def test_column_mapping_and_unknown_formats(tmp_path):
  _frame().rename(columns={"params": "Model Size"}).to_csv(tmp_path / "t.csv", index=False)
  t = table_lib.load_table(tmp_path / "t.csv", columns={"params": "Model Size"}, params_convention="total")
  assert t.params_convention == "total" and t.column("params")[0] == 1e8
  with pytest.raises(UserError, match="Nope"):
    table_lib.load_table(tmp_path / "t.csv", columns={"params": "Nope"})
  (tmp_path / "t.pkl").write_bytes(b"\x80\x04")
  with pytest.raises(UserError, match="format"):
    table_lib.load_table(tmp_path / "t.pkl")
  with pytest.raises(UserError, match="no such file"):
    table_lib.load_table(tmp_path / "absent.csv")
  with pytest.raises(UserError, match="convention"):
    table_lib.from_frame(_frame(), params_convention="kaplan")


def test_exclude_top_loss_follows_the_chinchilla_rule_and_is_recorded():
  t = table_lib.from_frame(pd.DataFrame({"params": np.arange(1, 11) * 1e8, "tokens": 1e10,
                                         "loss": [3, 9, 2, 8, 4, 7, 5, 6, 1, 2.5]}))
  out = table_lib.exclude_top_loss(t, 3)
  assert sorted(out.column("loss")) == [1, 2, 2.5, 3, 4, 5, 6]
  assert out.exclusions[0]["loss"] == [9, 8, 7] and "exclude_top_loss=3" in out.exclusions[0]["rule"]
  assert t.exclusions == []  # the input table is untouched
  with pytest.raises(UserError, match="exclude_top_loss"):
    table_lib.exclude_top_loss(t, 10)


def test_require_helpers():
  t = table_lib.from_frame(_frame())
  with pytest.raises(UserError, match="at least 6 rows"):
    table_lib.require_rows(t, 6, "Approach 3")
  with pytest.raises(UserError) as e:
    table_lib.require_columns(t, ["run_id"], "Approach 1")
  assert e.value.field == "run_id"
