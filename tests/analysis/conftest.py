"""Shared fixtures: the public Chinchilla table (../shared/data, README recipe) and its reference fit."""
import os
import pathlib

import numpy as np
import pandas as pd
import pytest

from analysis import table as table_lib

SHARED_DATA = pathlib.Path(os.environ.get("MDM_LAB_SHARED_DATA", pathlib.Path(__file__).parents[3] / "shared/data"))
CHINCHILLA_CSV = SHARED_DATA / "chinchilla_epoch.csv"
CHINCHILLA_COLUMNS = {"params": "Model Size", "flops": "Training FLOP"}
# Epoch's published estimate (README of ../shared/data): the allocation targets are computed from these.
EPOCH = {"A": 482.01, "B": 2085.43, "E": 1.82, "alpha": 0.3478, "beta": 0.3658}
CHINCHILLA_TRUTH = {"E": 1.8172, "A": 482.0, "B": 2085.0, "alpha": 0.3478, "beta": 0.3658}


@pytest.fixture(scope="session")
def chinchilla_table():
  if not CHINCHILLA_CSV.is_file():
    pytest.skip(f"public Chinchilla data not found at {CHINCHILLA_CSV} (set MDM_LAB_SHARED_DATA)")
  table = table_lib.load_table(CHINCHILLA_CSV, columns=CHINCHILLA_COLUMNS, params_convention="total")
  return table_lib.exclude_top_loss(table, 5)


@pytest.fixture(scope="session")
def chinchilla_fit(chinchilla_table):
  from analysis.parametric import fit_approach3
  return fit_approach3(chinchilla_table)


def synthetic_frame(params: dict, n_grid=8, d_grid=8, noise=0.0, seed=0, n_range=(1e7, 1e10), d_range=(1e9, 1e12)):
  """Losses from L = E + A/N^α + B/D^β on a log grid of (N, D), with optional multiplicative log-normal noise."""
  rng = np.random.default_rng(seed)
  n, d = np.meshgrid(np.geomspace(*n_range, n_grid), np.geomspace(*d_range, d_grid))
  n, d = n.ravel(), d.ravel()
  loss = params["E"] + params["A"] * n ** -params["alpha"] + params["B"] * d ** -params["beta"]
  loss = loss * np.exp(noise * rng.standard_normal(loss.shape))
  return pd.DataFrame({"params": n, "tokens": d, "loss": loss, "run_id": [f"r{i}" for i in range(n.size)]})
