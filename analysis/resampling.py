"""Bootstrap over runs (cluster bootstrap when runs have several rows), percentile CIs of parameters and of the
derived a, b, N*(C), D*(C), D*/N*, L*(C) (METHOD.md §5.1–5.2, §5.9 pitfall 8).

A resample is a vector of row weights (how often each row, or each run's rows, was drawn), so the Approach-3 and
VPNLS refits of all resamples run as one batched L-BFGS warm-started from the full fit. Every replicate goes through
the allocation formulas before any summary is taken. A fixed seed reproduces the CIs exactly.
"""
import dataclasses

import numpy as np

from analysis import allocation, lbfgs
from analysis import table as table_lib
from mdm_jax.errors import UserError

PARAMS = ("E", "A", "B", "alpha", "beta")


@dataclasses.dataclass
class Bootstrap:
  summary: dict                 # JSON-ready: per-quantity mean, sd, median, CI
  samples: dict                 # name -> [K] array (or [K, n_flops] for the frontier quantities)


def cluster_codes(table: table_lib.RunTable):
  """Integer run code per row when some run has several rows (then whole runs are resampled), else None."""
  if "run_id" not in table.df or not table.df["run_id"].duplicated().any():
    return None
  return table.df["run_id"].astype("category").cat.codes.to_numpy()


def resample_weights(n_rows: int, n_resamples: int, seed: int, codes=None) -> np.ndarray:
  """[K, n] draw counts: rows (or clusters = runs, with all their rows) sampled with replacement."""
  if n_resamples < 1:
    raise UserError("bootstrap", f"needs >= 1 resample, got {n_resamples}", "e.g. --bootstrap 4000")
  rng = np.random.default_rng(seed)
  if codes is None:
    draws = rng.integers(0, n_rows, (n_resamples, n_rows))
    return np.stack([np.bincount(d, minlength=n_rows) for d in draws]).astype(np.float64)
  n_clusters = int(codes.max()) + 1
  draws = rng.integers(0, n_clusters, (n_resamples, n_clusters))
  counts = np.stack([np.bincount(d, minlength=n_clusters) for d in draws]).astype(np.float64)
  return counts[:, codes]


def design_effect(residuals_n, codes) -> dict:
  """Epoch's n_eff = n / (1 + (m − 1)ρ) for m rows per run and intra-run residual correlation ρ (ANOVA estimate)."""
  r = np.asarray(residuals_n, np.float64)
  if codes is None:
    return {"rows_per_run": 1.0, "icc": 0.0, "n_eff": float(r.size)}
  groups = [r[codes == c] for c in np.unique(codes)]
  k, n = len(groups), r.size
  m = n / k
  ms_between = sum(g.size * (g.mean() - r.mean()) ** 2 for g in groups) / max(k - 1, 1)
  ms_within = sum(((g - g.mean()) ** 2).sum() for g in groups) / max(n - k, 1)
  icc = (ms_between - ms_within) / (ms_between + (m - 1) * ms_within) if ms_between + ms_within > 0 else 0.0
  icc = float(np.clip(icc, 0.0, 1.0))
  return {"rows_per_run": float(m), "icc": icc, "n_eff": float(n / (1 + (m - 1) * icc))}


def describe(samples_K, level: float) -> dict:
  s = np.asarray(samples_K, np.float64)
  s = s[np.isfinite(s)]
  if s.size == 0:
    return {"n": 0}
  lo, hi = np.percentile(s, [50 * (1 - level), 50 * (1 + level)])
  return {"n": int(s.size), "mean": float(s.mean()), "sd": float(s.std(ddof=1)) if s.size > 1 else 0.0,
          "median": float(np.median(s)), "ci": [float(lo), float(hi)]}


def _frontier(samples: dict, at_flops) -> dict:
  """Push every replicate through the closed-form allocation (§5.1)."""
  alpha, beta, A, B, E = (samples[k] for k in ("alpha", "beta", "A", "B", "E"))
  ok = (alpha > 0) & (beta > 0) & (A > 0) & (B > 0)
  out = {k: np.full(alpha.shape, np.nan) for k in ("a", "b", "G")}
  out["a"][ok], out["b"][ok] = beta[ok] / (alpha[ok] + beta[ok]), alpha[ok] / (alpha[ok] + beta[ok])
  out["G"][ok] = (alpha[ok] * A[ok] / (beta[ok] * B[ok])) ** (1 / (alpha[ok] + beta[ok]))
  c6 = np.asarray(at_flops, np.float64)[None, :] / 6.0
  n_opt = out["G"][:, None] * c6 ** out["a"][:, None]
  d_opt = c6 ** out["b"][:, None] / out["G"][:, None]
  out.update(params_opt=n_opt, tokens_opt=d_opt, tokens_per_param=d_opt / n_opt,
             loss_opt=E[:, None] + A[:, None] * n_opt ** -alpha[:, None] + B[:, None] * d_opt ** -beta[:, None])
  return out


def default_flops(table: table_lib.RunTable) -> list[float]:
  """Compute points for the derived frontier: the largest budget in the data and 10x, 100x, 1000x beyond it."""
  top = float(np.max(table.column("flops")))
  return [top * 10.0**k for k in range(4)]


def bootstrap(fit, table: table_lib.RunTable, n_resamples: int = 4000, seed: int = 0, at_flops=None,
              level: float = 0.95, ftol: float | None = None) -> Bootstrap:
  """Refit `fit`'s method on resampled runs; returns summaries (also stored on fit.bootstrap) and raw samples.

  ftol overrides the refits' relative stopping tolerance (default: the full fit's); replicates only need a precision
  well below the spread they measure.
  """
  at_flops = default_flops(table) if at_flops is None else [float(c) for c in np.atleast_1d(at_flops)]
  codes = cluster_codes(table)
  weights = resample_weights(len(table), n_resamples, seed, codes)
  if fit.method == "approach3":
    samples, status = _refit_approach3(fit, table, weights, ftol)
  elif fit.method == "vpnls":
    samples, status = _refit_vpnls(fit, table, weights)
  elif fit.method in ("approach2", "approach1"):
    samples, status = _refit_power_law(fit, table, weights, at_flops)
  else:
    raise UserError("method", f"no bootstrap for method {fit.method!r}", "use approach2, approach3 or vpnls")
  if fit.method in ("approach3", "vpnls"):
    samples.update(_frontier(samples, at_flops))
  summary = {"n_resamples": n_resamples, "seed": seed, "level": level, "cluster_by_run": codes is not None,
             "n_clusters": int(codes.max()) + 1 if codes is not None else len(table), "status_counts": status,
             "at_flops": at_flops, "quantities": {}}
  for name, values in samples.items():
    if np.ndim(values) == 2:
      summary["quantities"][name] = [describe(values[:, j], level) for j in range(values.shape[1])]
    else:
      summary["quantities"][name] = describe(values, level)
  fit.bootstrap = summary
  return Bootstrap(summary=summary, samples=samples)


def _refit_approach3(fit, table, weights, ftol):
  from analysis import parametric
  est = fit.estimator
  obj = parametric.make_objective(table, est["loss"], est["delta"], est["reduction"], weights_Rxn=weights)
  x0 = np.repeat(np.asarray(fit.diagnostics["x_log"], np.float64)[None], weights.shape[0], axis=0)
  bounds = [est["bounds"][k] for k in parametric.PARAM_NAMES]
  lower = np.array([-np.inf if lo is None else lo for lo, _ in bounds], np.float64)
  upper = np.array([np.inf if hi is None else hi for _, hi in bounds], np.float64)
  res = lbfgs.minimize(obj, x0, lower, upper, ftol=ftol or est.get("ftol", 1e-11), gtol=est.get("gtol", 1e-10))
  a, b, e, alpha, beta = res.x.T
  return {"E": np.exp(e), "A": np.exp(a), "B": np.exp(b), "alpha": alpha, "beta": beta}, res.status_counts()


def _refit_vpnls(fit, table, weights):
  from analysis import vpnls
  obj = vpnls.make_objective(table, weights_Rxn=weights)
  x0 = np.repeat(np.array([[fit.alpha, fit.beta]]), weights.shape[0], axis=0)
  res = lbfgs.minimize(obj, x0, [vpnls.BOUNDS[0]] * 2, [vpnls.BOUNDS[1]] * 2, ftol=1e-13, gtol=1e-12)
  coef, _, _, _ = obj.solve(res.x, np.arange(weights.shape[0]))
  return ({"E": coef[:, 0], "A": coef[:, 1], "B": coef[:, 2], "alpha": res.x[:, 0], "beta": res.x[:, 1]},
          res.status_counts())


def _refit_power_law(fit, table, weights, at_flops):
  """Approaches 1 and 2 have no batched form: refit each resampled table (rows repeated by their draw counts)."""
  from analysis.envelope import fit_envelope
  from analysis.isoflop import fit_isoflop
  est = fit.estimator
  if fit.method == "approach2":
    refit = lambda t: fit_isoflop(t, axis=est["axis"], vertex=est["vertex"], budget_precision=est["budget_precision"])
  else:
    refit = lambda t: fit_envelope(t, n_points=est["grid_points"])
  keys = ("a", "b", "k_params", "k_tokens")
  out = {k: np.full(weights.shape[0], np.nan) for k in keys}
  c = np.asarray(at_flops, np.float64)
  front = {k: np.full((weights.shape[0], c.size), np.nan) for k in ("params_opt", "tokens_opt", "tokens_per_param")}
  failures = {}
  for i, counts in enumerate(weights.astype(np.int64)):
    resampled = table.replace(table.df.loc[np.repeat(table.df.index.to_numpy(), counts)])
    try:
      r = refit(resampled)
    except UserError as e:  # e.g. a resample left too few budgets: counted, not hidden
      failures[e.field] = failures.get(e.field, 0) + 1
      continue
    for k in keys:
      out[k][i] = getattr(r, k)
    alloc = r.allocate(c)
    front["params_opt"][i], front["tokens_opt"][i] = alloc["params"], alloc["tokens"]
    front["tokens_per_param"][i] = alloc["tokens"] / alloc["params"]
  n_ok = int(np.isfinite(out["a"]).sum())
  status = {"refit_ok": n_ok, **{f"failed_{k}": v for k, v in failures.items()}}
  return {**out, **front}, status
