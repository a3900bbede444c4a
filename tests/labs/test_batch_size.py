"""The batch-size study's specs and B_crit/γ plumbing (the study itself runs for minutes: labs/batch_size)."""
import math

import pandas as pd
import pytest

from labs.batch_size import analyse, study
from mdm_jax import optim
from mdm_jax.config import CONFIG_DIR
from sweeps.spec import Spec


def resolved(spec_dict):
  spec = Spec(spec_dict, CONFIG_DIR)
  return [spec.resolve(p) for p in spec.points()]


def test_batch_sweep_spans_16x_at_one_budget_with_and_without_kappa():
  cfgs = resolved(study.batch_spec(lr_base=4e-3, gamma=0.44))
  batches = sorted({c.batch.logical for c in cfgs})
  assert batches[-1] / batches[0] >= 16
  assert {c.total_steps * c.tokens_per_step for c in cfgs} == {study.D_BASE}
  for c in cfgs:
    assert c.batch.physical == c.batch.logical and c.batch.micro * c.train.eval_batches == study.EVAL_ROWS
    h = optim.hyperparams(c)
    kappa = c.batch.logical / study.B_BASE if c.sde.enabled else 1.0   # D = D_base: the γ term is 1
    assert h["lr"] == pytest.approx(c.optim.lr * math.sqrt(kappa)) and h["b2"] == pytest.approx(c.optim.b2 ** kappa)
  per_batch = pd.Series([c.batch.logical for c in cfgs]).value_counts()
  assert set(per_batch) == {len(study.LR_MULTS) + 1}   # the κ LR sweep plus the no-κ run


def test_pilot_grid_has_two_batches_two_horizons_and_an_lr_sweep():
  cfgs = resolved(study.pilot_spec())
  keys = {(c.batch.logical, c.total_steps * c.tokens_per_step) for c in cfgs}
  assert keys == {(b, d) for b in study.PILOT_BATCHES for d in study.PILOT_TOKENS}
  assert len({c.optim.lr for c in cfgs}) == 6 and not any(c.sde.enabled for c in cfgs)


def test_b_crit_interpolates_the_first_crossing_in_log_batch():
  loss = {4: 5.00, 8: 5.01, 16: 5.02, 32: 5.20, 64: 5.60}
  df = pd.DataFrame({"batch_size": list(loss), "loss": list(loss.values()), "tokens": 65536, "params": 1e5})
  out = analyse.b_crit(df, tolerance=0.01)
  threshold = 1.01 * 5.00
  frac = (threshold - 5.02) / (5.20 - 5.02)
  assert out["batch_crit"] == pytest.approx(2 ** (4 + frac))
  flat = df.assign(loss=5.0)
  assert analyse.b_crit(flat, 0.01) == {"batch_crit": None, "censored_above": pytest.approx(64.0), "loss_best": 5.0}
