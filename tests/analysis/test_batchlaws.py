"""Batch-size and LR laws on synthetic sweeps whose optima follow known power laws; γ of the κ rule recovered."""
import numpy as np
import pandas as pd
import pytest

from analysis import batchlaws
from analysis.table import from_frame
from mdm_jax.errors import UserError

TOKENS = np.geomspace(1e9, 1e12, 5)


def _base(tokens):
  return 2.0 + 50.0 * tokens**-0.2


def test_optimal_batch_follows_its_power_law():
  rows = []
  for d in TOKENS:
    b_opt = 10**-2.4 * d**0.8225  # GIDD's law with the corrected prefactor sign (METHOD §4.5)
    for b in b_opt * np.geomspace(0.1, 10, 9):
      rows.append({"batch_size": b, "tokens": d, "params": 1e8, "loss": _base(d) + 0.02 * np.log(b / b_opt) ** 2})
  out = batchlaws.optimal_batch_sizes(from_frame(pd.DataFrame(rows)))
  assert out["p"] == pytest.approx(0.8225, abs=1e-9) and out["k"] == pytest.approx(10**-2.4, rel=1e-6)
  assert out["dropped"] == []


def test_critical_batch_exponent_and_censoring():
  rows = []
  for i, d in enumerate(TOKENS):
    b_crit = 3.0 * d**0.462
    for b in np.geomspace(1e2, 1e8, 25):
      excess = 0.05 * max(0.0, np.log(b / b_crit)) ** 2  # flat up to B_crit, then degrading (§4.3)
      rows.append({"batch_size": b, "tokens": d, "params": 1e8, "loss": _base(d) * (1 + excess)})
  rows.append({"batch_size": 1e2, "tokens": 5e12, "params": 1e8, "loss": 2.5})
  rows.append({"batch_size": 1e3, "tokens": 5e12, "params": 1e8, "loss": 2.5})  # never degrades: censored
  out = batchlaws.critical_batch_sizes(from_frame(pd.DataFrame(rows)), tolerance=0.01)
  assert out["q"] == pytest.approx(0.462, abs=0.02)
  assert [c["tokens"] for c in out["censored"]] == [5e12]
  one = batchlaws.critical_batch_sizes(from_frame(pd.DataFrame([r for r in rows if r["tokens"] == TOKENS[0]])))
  assert one["law"] is None and one["points"] == [p for p in out["points"] if p["tokens"] == TOKENS[0]]


def _lr_sweep(gamma=0.44, batch_exponent=0.5, batch_base=256.0, tokens_base=13e9, lr_base=3e-3):
  rows = []
  for b in (64.0, 256.0, 1024.0):
    for d in np.geomspace(1e9, 1e11, 4):
      lr_opt = lr_base * (b / batch_base) ** batch_exponent * (tokens_base / d) ** (gamma / 2)
      for lr in lr_opt * np.geomspace(0.25, 4, 7):
        rows.append({"lr": lr, "batch_size": b, "tokens": d, "params": 1e8,
                     "loss": _base(d) + 0.05 * np.log(lr / lr_opt) ** 2})
  return from_frame(pd.DataFrame(rows))


def test_lr_law_and_gamma_are_recovered():
  law = batchlaws.lr_law(_lr_sweep())
  assert law["p"] == pytest.approx(0.5, abs=1e-9) and law["q"] == pytest.approx(-0.22, abs=1e-9)
  fixed = batchlaws.fit_gamma(law, batch_base=256.0, tokens_base=13e9)
  assert fixed["gamma"] == pytest.approx(0.44, abs=1e-9) and fixed["lr_base"] == pytest.approx(3e-3, rel=1e-9)
  free = batchlaws.fit_gamma(_lr_sweep(gamma=1.0, batch_exponent=0.4), batch_base=256.0, tokens_base=13e9,
                             free_batch_exponent=True)
  assert free["gamma"] == pytest.approx(1.0, abs=1e-9) and free["batch_exponent"] == pytest.approx(0.4, abs=1e-9)


def test_lr_law_needs_interior_optima():
  table = _lr_sweep()
  edge_only = table.replace(table.df[table.df.lr < table.df.groupby(["batch_size", "tokens"]).lr.transform("median")])
  with pytest.raises(UserError, match="lr"):
    batchlaws.lr_law(edge_only)
  with pytest.raises(UserError, match="batch_size"):
    batchlaws.lr_law(table.replace(table.df.drop(columns="batch_size")))
