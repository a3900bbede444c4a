"""Bootstrap: the published Chinchilla spreads and CIs, exact reproducibility, cluster resampling (§5.9 pitfall 8)
and CI coverage over repeated noisy draws."""
import numpy as np
import pandas as pd
import pytest

from analysis import resampling as boot
from analysis.parametric import fit_approach3
from analysis.table import from_frame
from tests.analysis.conftest import CHINCHILLA_TRUTH, synthetic_frame


@pytest.fixture(scope="module")
def chinchilla_boot(chinchilla_fit, chinchilla_table):
  return boot.bootstrap(chinchilla_fit, chinchilla_table, n_resamples=4000, seed=0, at_flops=[5.88e23])


def test_chinchilla_bootstrap_reproduces_the_published_spread(chinchilla_boot):
  q = chinchilla_boot.summary["quantities"]
  published_sd = {"A": 124.5, "B": 1293.0, "E": 0.0257, "alpha": 0.0154, "beta": 0.0206}
  for key, sd in published_sd.items():
    assert q[key]["sd"] == pytest.approx(sd, rel=0.10), key
  assert q["alpha"]["ci"] == pytest.approx([0.317, 0.373], abs=0.01)
  assert q["beta"]["ci"] == pytest.approx([0.331, 0.415], abs=0.01)
  assert chinchilla_boot.summary["status_counts"].get("max_iter", 0) == 0


def test_every_replicate_goes_through_the_allocation(chinchilla_boot):
  s = chinchilla_boot.samples
  np.testing.assert_allclose(s["a"], s["beta"] / (s["alpha"] + s["beta"]))
  np.testing.assert_allclose(s["params_opt"][:, 0] * s["tokens_opt"][:, 0] * 6, 5.88e23, rtol=1e-12)
  q = chinchilla_boot.summary["quantities"]
  assert q["params_opt"][0]["ci"][0] < 7.3e10 < q["params_opt"][0]["ci"][1]
  assert len(q["loss_opt"]) == 1 and q["tokens_per_param"][0]["n"] == 4000


def test_fixed_seed_reproduces_exactly(chinchilla_table):
  fit = fit_approach3(chinchilla_table, starts=np.array([[6.17, 7.67, 0.597, 0.347, 0.367]]))
  one = boot.bootstrap(fit, chinchilla_table, n_resamples=50, seed=7).summary
  two = boot.bootstrap(fit, chinchilla_table, n_resamples=50, seed=7).summary
  other = boot.bootstrap(fit, chinchilla_table, n_resamples=50, seed=8).summary
  assert one == two
  assert one["quantities"]["alpha"] != other["quantities"]["alpha"]


def _checkpoint_table(seed, runs=12, per_run=4, run_sd=0.01):
  """Several checkpoints per run sharing a run-level offset: rows are correlated within runs."""
  rng = np.random.default_rng(seed)
  base = synthetic_frame(CHINCHILLA_TRUTH, n_grid=runs, d_grid=1, n_range=(1e7, 1e10), d_range=(1e11, 1e11))
  rows = []
  for i, row in base.iterrows():
    offset = run_sd * rng.standard_normal()
    for d in np.geomspace(1e9, 1e11, per_run):
      loss = (CHINCHILLA_TRUTH["E"] + CHINCHILLA_TRUTH["A"] * row.params ** -CHINCHILLA_TRUTH["alpha"]
              + CHINCHILLA_TRUTH["B"] * d ** -CHINCHILLA_TRUTH["beta"]) * np.exp(offset + 1e-3 * rng.standard_normal())
      rows.append({"run_id": f"r{i}", "params": row.params, "tokens": d, "loss": loss})
  return from_frame(pd.DataFrame(rows))


def test_cluster_bootstrap_resamples_whole_runs():
  table = _checkpoint_table(0)
  codes = boot.cluster_codes(table)
  w = boot.resample_weights(len(table), 20, seed=1, codes=codes)
  for k in range(20):
    for c in np.unique(codes):
      assert np.unique(w[k, codes == c]).size == 1  # a run's rows are drawn together
  assert np.all(w.sum(1) == len(table))  # equal-sized runs: every resample has n rows
  assert boot.cluster_codes(from_frame(synthetic_frame(CHINCHILLA_TRUTH))) is None


def test_design_effect_matches_the_formula():
  rng = np.random.default_rng(3)
  codes = np.repeat(np.arange(400), 5)
  r = np.repeat(rng.normal(0, 1.0, 400), 5) + rng.normal(0, 1.0, 2000)  # ICC = 1 / (1 + 1) = 0.5
  d = boot.design_effect(r, codes)
  assert d["icc"] == pytest.approx(0.5, abs=0.07)
  assert d["n_eff"] == pytest.approx(2000 / (1 + 4 * d["icc"]))
  assert boot.design_effect(r, None)["n_eff"] == 2000


def test_correlated_checkpoints_widen_the_cluster_interval():
  """Pitfall 8: treating correlated checkpoints as independent rows understates the uncertainty."""
  table = _checkpoint_table(5)
  x0 = np.array([[np.log(482.0), np.log(2085.0), np.log(1.8172), 0.3478, 0.3658]])
  fit = fit_approach3(table, starts=x0)
  cluster = boot.bootstrap(fit, table, 300, seed=0).summary["quantities"]["alpha"]["ci"]
  rows = boot.bootstrap(fit, table.replace(table.df.drop(columns="run_id")), 300, seed=0)
  row_ci = rows.summary["quantities"]["alpha"]["ci"]
  assert rows.summary["cluster_by_run"] is False
  assert (cluster[1] - cluster[0]) > 1.5 * (row_ci[1] - row_ci[0])


def test_intervals_cover_the_truth_at_about_the_nominal_rate():
  """24 noisy synthetic draws (log-normal noise inside Huber's quadratic zone), 90% percentile intervals from 100
  resamples each: coverage near 0.9 and interval widths near 2·1.645 SD of the draw-to-draw estimates."""
  x_true = np.array([np.log(482.0), np.log(2085.0), np.log(1.8172), 0.3478, 0.3658])
  hits, widths, estimates = {k: 0 for k in CHINCHILLA_TRUTH}, [], []
  draws = 24
  for d in range(draws):
    table = from_frame(synthetic_frame(CHINCHILLA_TRUTH, n_grid=6, d_grid=6, noise=5e-4, seed=100 + d))
    fit = fit_approach3(table, starts=x_true[None])
    q = boot.bootstrap(fit, table, 100, seed=d, at_flops=[1e22], level=0.9, ftol=1e-8).summary["quantities"]
    for key, value in CHINCHILLA_TRUTH.items():
      hits[key] += q[key]["ci"][0] <= value <= q[key]["ci"][1]
    widths.append(q["alpha"]["ci"][1] - q["alpha"]["ci"][0])
    estimates.append(fit.alpha)
  coverage = {k: v / draws for k, v in hits.items()}
  assert all(c >= 0.7 for c in coverage.values()), coverage
  assert 0.8 <= np.mean(list(coverage.values())) <= 1.0, coverage
  assert 0.6 <= np.median(widths) / (2 * 1.645 * np.std(estimates, ddof=1)) <= 1.6


def test_vpnls_and_isoflop_bootstraps(chinchilla_table):
  from analysis.vpnls import fit_vpnls
  vp = fit_vpnls(chinchilla_table)
  b = boot.bootstrap(vp, chinchilla_table, 200, seed=0)
  assert b.summary["quantities"]["alpha"]["ci"][0] < vp.alpha < b.summary["quantities"]["alpha"]["ci"][1]
  assert len(b.summary["at_flops"]) == 4  # the default frontier points
  from tests.analysis.test_isoflop import isoflop_frame
  from analysis.isoflop import fit_isoflop
  table = from_frame(isoflop_frame(noise=0.003))
  iso = fit_isoflop(table)
  b2 = boot.bootstrap(iso, table, 40, seed=0)
  assert b2.summary["status_counts"]["refit_ok"] >= 35
  assert b2.summary["quantities"]["a"]["ci"][0] < iso.a < b2.summary["quantities"]["a"]["ci"][1]
  with pytest.raises(boot.UserError, match="bootstrap"):
    boot.resample_weights(10, 0, seed=0)
