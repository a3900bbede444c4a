"""Approach 1 on synthetic training curves that follow the Chinchilla surface (a length-independent schedule)."""
import numpy as np
import pandas as pd
import pytest

from analysis import envelope
from analysis.table import from_frame
from mdm_jax.errors import UserError
from tests.analysis.conftest import CHINCHILLA_TRUTH

A_TRUE = CHINCHILLA_TRUTH["beta"] / (CHINCHILLA_TRUTH["alpha"] + CHINCHILLA_TRUTH["beta"])


def curve_frame(sizes=np.geomspace(1e7, 1e10, 25), d_max=3e12, steps=60):
  rows = []
  for i, n in enumerate(sizes):
    for step, d in enumerate(np.geomspace(1e8, d_max, steps)):
      loss = CHINCHILLA_TRUTH["E"] + CHINCHILLA_TRUTH["A"] * n ** -CHINCHILLA_TRUTH["alpha"] + \
          CHINCHILLA_TRUTH["B"] * d ** -CHINCHILLA_TRUTH["beta"]
      rows.append({"run_id": f"r{i}", "step": step, "params": n, "tokens": d, "flops": 6 * n * d, "loss": loss})
  return pd.DataFrame(rows)


def test_envelope_tracks_the_compute_optimal_frontier():
  fit = envelope.fit_envelope(from_frame(curve_frame()))
  assert fit.a == pytest.approx(A_TRUE, abs=0.03)
  assert fit.b == pytest.approx(1 - A_TRUE, abs=0.03)
  assert fit.diagnostics["warnings"][0] == envelope.SCHEDULE_WARNING
  assert fit.diagnostics["n_envelope_runs"] > 5
  losses = [p["loss"] for p in fit.points]
  assert all(np.diff(losses) < 0)  # the frontier falls with compute


def test_length_tied_schedules_warn_louder():
  table = from_frame(curve_frame(), metadata={"hyperparameters": {"optim.lr_schedule": "cosine"}})
  assert "length-tied" in envelope.fit_envelope(table).diagnostics["warnings"][0]


def test_final_points_only_are_refused():
  finals = curve_frame().groupby("run_id").tail(1)
  with pytest.raises(UserError) as e:
    envelope.fit_envelope(from_frame(finals))
  assert e.value.field == "step"
  with pytest.raises(UserError, match="run_id"):
    envelope.fit_envelope(from_frame(curve_frame().drop(columns="run_id")))
