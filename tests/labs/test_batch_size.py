"""The batch-size lab: its specs plan a 16× batch range at one token budget with and without κ, and its analysis
recovers a planted γ, η_base and B_crit from run directories written with a known loss surface."""
import math
import pathlib

import numpy as np
import pytest

from labs import common
from mdm_jax import optim, runio
from sweeps.plan import make_plan

LAB = pathlib.Path(__file__).parents[2] / "labs" / "batch_size"
GAMMA, LR_BASE = 0.6, 8e-3


@pytest.fixture(scope="module")
def lab():
  return common.load_lab(LAB)


@pytest.mark.parametrize("scale, batches, pilot_runs", [("default", [4, 8, 16, 32, 64], 24), ("ci", [4, 16, 64], 12)])
def test_specs_plan_a_16x_batch_range_at_one_budget_with_and_without_kappa(lab, tmp_path, scale, batches, pilot_runs):
  ctx = common.LabContext(LAB, tmp_path, scale=scale)
  pilot = make_plan(lab._spec(ctx, "pilot")).runs
  assert len(pilot) == pilot_runs and not any(r.cfg.sde.enabled for r in pilot)
  assert {r.cfg.batch.logical for r in pilot} == {4, 16} and len({r.cfg.total_steps * r.cfg.tokens_per_step
                                                                  for r in pilot}) == 2
  plan = make_plan(lab.batch_spec(ctx, {"lr_base": LR_BASE, "gamma": GAMMA}))
  cfgs = [r.cfg for r in plan.runs]
  assert sorted({c.batch.logical for c in cfgs}) == batches and batches[-1] / batches[0] >= 16
  (budget,) = {c.total_steps * c.tokens_per_step for c in cfgs}
  for c in cfgs:
    assert c.batch.physical == c.batch.logical and c.batch.accumulation == 1   # the physical batch varies
    assert c.batch.logical * c.train.eval_batches == 64   # every run is evaluated on the same 64 rows
    assert c.sde.base_tokens == budget and c.sde.base_batch == lab.B_BASE and c.sde.gamma == GAMMA
    h = optim.hyperparams(c)
    kappa = c.batch.logical / lab.B_BASE if c.sde.enabled else 1.0   # D = D_base: the γ term is 1
    assert h["resolved"]["sde"]["kappa"] == pytest.approx(kappa)
    assert h["lr"] == pytest.approx(c.optim.lr * math.sqrt(kappa)) and h["b2"] == pytest.approx(c.optim.b2 ** kappa)
  assert {c.optim.lr / LR_BASE for c in cfgs if not c.sde.enabled} == {1.0}
  assert {c.train.seed for c in cfgs} == ({0, 1} if scale == "default" else {0})
  mults = {round(c.optim.lr / LR_BASE, 6) for c in cfgs if c.sde.enabled}
  assert mults == ({0.5, 1.0, 2.0} if scale == "default" else {1.0})
  groups = {}
  for r in plan.runs:
    groups.setdefault(r.group, set()).add(r.cfg.batch.logical)
  assert sorted(len(b) for b in groups.values()) == [1] * len(batches)   # one vmapped group per batch size
  assert lab.B_BASE == 16


def lr_opt(batch, tokens, d_base):
  return LR_BASE * math.sqrt(batch / 16) * (d_base / tokens) ** (GAMMA / 2)   # B_base = 16


def kappa_loss(batch):   # flat up to B = 16, then +5% per doubling
  return 3.0 * (1 + 0.05 * max(0.0, math.log2(batch / 16)))


def write_runs(plan, sweep_dir, loss_of):
  for r in plan.runs:
    c = r.cfg
    d = sweep_dir / "runs" / r.run_id
    d.mkdir(parents=True)
    tokens = c.total_steps * c.tokens_per_step
    runio.write_json_atomic(d / runio.RUN_JSON, {
        "run_id": r.run_id, "status": "done", "config": c.to_dict(), "hyper": optim.hyperparams(c),
        "params": {"total": 100_000, "non_embedding": 50_000, "with_head": 80_000, "with_attention": 50_000},
        "tokens_planned": tokens, "steps_planned": c.total_steps,
        "final": {"step": c.total_steps, "tokens": tokens, "eval/loss": loss_of(c, tokens)}})


def test_analysis_recovers_planted_gamma_lr_base_and_b_crit(lab, tmp_path):
  ctx = common.LabContext(LAB, tmp_path, scale="default")
  pilot = make_plan(lab._spec(ctx, "pilot"))
  d_base = max(r.cfg.total_steps * r.cfg.tokens_per_step for r in pilot.runs)
  # Loss exactly quadratic in log LR around the planted optimum: the parabola vertices are exact.
  write_runs(pilot, ctx.sweep_dir("pilot"), lambda c, d: 3.0 + 0.1 * math.log(c.optim.lr /
                                                                               lr_opt(c.batch.logical, d, d_base)) ** 2)
  fit = lab.pilot_fit(ctx)
  assert fit["gamma"] == pytest.approx(GAMMA, abs=1e-6) and fit["lr_base"] == pytest.approx(LR_BASE, rel=1e-6)
  assert fit["free"]["batch_exponent"] == pytest.approx(0.5, abs=1e-6) and fit["tokens_base"] == d_base

  def batch_loss(c, d):
    noise = 0.01 * c.train.seed   # seeds 0 and 1: mean +0.005, half-range 0.005
    if not c.sde.enabled:
      return 3.0 + 0.1 * math.log2(c.batch.logical / 4) + noise   # degrades steadily without κ
    return kappa_loss(c.batch.logical) + 0.02 * abs(math.log2(c.optim.lr / fit["lr_base"])) + noise   # best at ×1

  current = make_plan(lab.batch_spec(ctx, fit))
  write_runs(current, ctx.sweep_dir("batch"), batch_loss)
  stale = make_plan(lab.batch_spec(ctx, {**fit, "lr_base": 3 * fit["lr_base"]}))   # a previous η_base: ignored
  write_runs(type(stale)(stale.spec, stale.runs[:2], 0), ctx.sweep_dir("batch"), lambda c, d: 1.0)
  res = lab.results(ctx)
  assert len(res["df"]) == 20 and set(res["df"].seeds) == {2}   # 5 batches × 4 settings, 2 seeds each
  np.testing.assert_allclose(res["df"].half_range, 0.005)
  kappa_arm = res["arms"]["κ rule, η_base"]
  np.testing.assert_allclose(kappa_arm.loss, [kappa_loss(b) + 0.005 for b in (4, 8, 16, 32, 64)])
  assert list(res["arms"]["κ rule, best of η_base×{½,1,2}"].mult) == [1.0] * 5
  # Threshold 1.01·3.005 is crossed between B = 16 (3.005) and 32 (3.155): log-linear interpolation by hand.
  threshold = 1.01 * 3.005
  assert res["crit"]["κ rule, η_base"]["batch_crit"] == pytest.approx(16 * 2 ** ((threshold - 3.005) / 0.15))
  assert res["spread"]["κ rule, η_base"] == pytest.approx(0.3) and res["spread"]["no κ"] == pytest.approx(0.4)
  assert res["crit"]["no κ"]["batch_crit"] == pytest.approx(4 * 2 ** ((threshold - 3.005) / 0.1))
  report = lab.report(ctx)
  assert report.clean and (ctx.figures / "loss_vs_batch.png").stat().st_size > 1000
  assert any(f"γ = **{GAMMA:.3f}" in body for _, body in report.sections)


def test_an_unidentified_gamma_falls_back_to_the_best_base_lr_and_flags_the_report(lab, tmp_path):
  ctx = common.LabContext(LAB, tmp_path, scale="ci")
  pilot = make_plan(lab._spec(ctx, "pilot"))
  write_runs(pilot, ctx.sweep_dir("pilot"), lambda c, d: 3.0 - 0.1 * math.log(c.optim.lr))   # optimum at the edge
  fit = lab.pilot_fit(ctx)
  assert fit["gamma"] is None and fit["lr_base"] == max(r.cfg.optim.lr for r in pilot.runs)
  write_runs(make_plan(lab.batch_spec(ctx, fit)), ctx.sweep_dir("batch"), lambda c, d: 3.0)
  report = lab.report(ctx)
  assert not report.clean and report.sections[0][0] == "γ (pilot)"
  assert lab.results(ctx)["crit"]["no κ"]["batch_crit"] is None   # flat: censored
