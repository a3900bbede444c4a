"""Batch-size and learning-rate laws, and the fit of γ in κ = (B/B_base)·(D_base/D)^γ (METHOD.md §4.2–4.5).

* B_opt(D): per token horizon D, the vertex of a parabola of loss in log B (edge minima dropped, as for isoFLOP
  profiles), then B_opt = k·D^p by OLS (GIDD: p ≈ 0.82 in tokens; Power Lines: B_opt ∝ D^0.383).
* B_crit(D): per D, the largest batch whose loss stays within `tolerance` (relative) of the best — loss is ~flat in B
  up to B_crit and degrades above it (§4.3) — interpolated in log B at the crossing; runs that never cross are
  censored (reported, not fitted). Then B_crit = k·D^q (law fields None with fewer than 2 uncensored horizons).
* η*(B, D): per (B, D) the vertex of a parabola in log η, then log η* = c + p·log B + q·log D by OLS.
* γ: the κ rule sets η ∝ √κ, i.e. log η* = log η_base + ½·log(B/B_base) − (γ/2)·log(D/D_base). With the batch
  exponent fixed at ½ (the rule), γ = −2·(slope in log D); with it free, both are reported. Batch is in whatever unit
  the table uses (sequences or tokens: say which — GIDD's constants are per token).
"""
import math

import numpy as np

from analysis import powerlaw
from analysis import table as table_lib
from analysis.isoflop import profile_vertex
from mdm_jax.errors import UserError


def _groups(table: table_lib.RunTable, keys):
  df = table.df
  return [(k if isinstance(k, tuple) else (k,), g) for k, g in df.groupby(list(keys), sort=True)]


def _group_optima(table: table_lib.RunTable, keys, x_col: str, out_key: str, vertex: str):
  """Per group of `keys`, the profile vertex of loss in log(x_col): (points with out_key, dropped edge groups)."""
  points, dropped = [], []
  for values, g in _groups(table, keys):
    v = profile_vertex(np.log(g[x_col].to_numpy(float)), g["loss"].to_numpy(float), vertex)
    v.update({k: float(val) for k, val in zip(keys, values)})
    if v["edge"] is None:
      v[out_key] = math.exp(v["x_vertex"])
      points.append(v)
    else:
      dropped.append(v)
  return points, dropped


def optimal_batch_sizes(data, *, vertex: str = "parabola") -> dict:
  """B_opt per token horizon and the power law B_opt = k·D^p."""
  from analysis.parametric import as_table
  table = as_table(data)
  table_lib.require_columns(table, ("batch_size", "tokens", "loss"), "the B_opt(D) law")
  points, dropped = _group_optima(table, ["tokens"], "batch_size", "batch_opt", vertex)
  law = powerlaw.fit_power_law([p["tokens"] for p in points], [p["batch_opt"] for p in points], "tokens")
  return {"law": "B_opt = k * D^p", "k": law["prefactor"], "p": law["exponent"], "ols": law, "points": points,
          "dropped": dropped, "vertex": f"{vertex} in log B"}


def critical_batch_sizes(data, *, tolerance: float = 0.01) -> dict:
  """B_crit per token horizon (largest B within `tolerance` of the best loss) and B_crit = k·D^q."""
  from analysis.parametric import as_table
  table = as_table(data)
  table_lib.require_columns(table, ("batch_size", "tokens", "loss"), "the B_crit(D) law")
  if not 0 < tolerance < 1:
    raise UserError("tolerance", f"must be in (0, 1), got {tolerance}", "e.g. 0.01 for 1%")
  points, censored = [], []
  for (tokens,), g in _groups(table, ["tokens"]):
    g = g.groupby("batch_size", as_index=False)["loss"].mean().sort_values("batch_size")
    log_b, loss = np.log(g["batch_size"].to_numpy(float)), g["loss"].to_numpy(float)
    i_best = int(np.argmin(loss))
    threshold = (1 + tolerance) * loss[i_best]
    above = np.flatnonzero((loss > threshold) & (np.arange(loss.size) > i_best))
    if above.size == 0:
      censored.append({"tokens": float(tokens), "batch_max": float(np.exp(log_b[-1]))})
      continue
    j = int(above[0])  # first batch past the threshold; interpolate log B between j-1 and j
    frac = (threshold - loss[j - 1]) / (loss[j] - loss[j - 1])
    points.append({"tokens": float(tokens), "batch_crit": float(np.exp(log_b[j - 1] + frac * (log_b[j] - log_b[j - 1]))),
                   "loss_best": float(loss[i_best])})
  if len(points) < 2:   # one horizon (or all censored): the per-horizon B_crit without a law in D
    return {"law": None, "k": None, "q": None, "ols": None, "points": points, "censored": censored,
            "tolerance": tolerance}
  law = powerlaw.fit_power_law([p["tokens"] for p in points], [p["batch_crit"] for p in points], "tokens")
  return {"law": "B_crit = k * D^q", "k": law["prefactor"], "q": law["exponent"], "ols": law, "points": points,
          "censored": censored, "tolerance": tolerance}


def lr_law(data, *, vertex: str = "parabola") -> dict:
  """η*(B, D) per (batch, tokens) group and log η* = c + p·log B + q·log D."""
  from analysis.parametric import as_table
  table = as_table(data)
  table_lib.require_columns(table, ("lr", "batch_size", "tokens", "loss"), "the learning-rate law")
  points, dropped = _group_optima(table, ["batch_size", "tokens"], "lr", "lr_opt", vertex)
  if len(points) < 4:
    raise UserError("lr", f"the LR law needs >= 4 (B, D) groups with an interior optimum, got {len(points)}",
                    "sweep LR around its optimum at more batch sizes and horizons")
  b = np.log([p["batch_size"] for p in points])
  d = np.log([p["tokens"] for p in points])
  y = np.log([p["lr_opt"] for p in points])
  out = powerlaw.ols(np.stack([np.ones_like(b), b, d], 1), y)
  return {"law": "lr* = exp(c) * B^p * D^q", "c": float(out["coef"][0]), "p": float(out["coef"][1]),
          "q": float(out["coef"][2]), "se": [float(s) for s in out["se"]], "r2": float(out["r2"]),
          "points": points, "dropped": dropped, "vertex": f"{vertex} in log lr"}


def fit_gamma(law_or_table, *, batch_base: float, tokens_base: float, free_batch_exponent: bool = False) -> dict:
  """γ of the κ rule from optimal learning rates (a `lr_law` result or a table to run it on)."""
  law = law_or_table if isinstance(law_or_table, dict) and "points" in law_or_table else lr_law(law_or_table)
  if not (batch_base > 0 and tokens_base > 0):
    raise UserError("batch_base", "B_base and D_base must be > 0", "e.g. the pilot's batch and token budget")
  pts = law["points"]
  lb = np.log([p["batch_size"] / batch_base for p in pts])
  ld = np.log([p["tokens"] / tokens_base for p in pts])
  y = np.log([p["lr_opt"] for p in pts])
  if free_batch_exponent:
    out = powerlaw.ols(np.stack([np.ones_like(lb), lb, ld], 1), y)
    batch_exp, batch_se = float(out["coef"][1]), float(out["se"][1])
    slope, slope_se = float(out["coef"][2]), float(out["se"][2])
  else:
    out = powerlaw.ols(np.stack([np.ones_like(ld), ld], 1), y - 0.5 * lb)
    batch_exp, batch_se = 0.5, 0.0
    slope, slope_se = float(out["coef"][1]), float(out["se"][1])
  return {"gamma": -2.0 * slope, "gamma_se": 2.0 * slope_se, "lr_base": float(math.exp(out["coef"][0])),
          "batch_exponent": batch_exp, "batch_exponent_se": batch_se, "batch_exponent_fixed": not free_batch_exponent,
          "batch_base": batch_base, "tokens_base": tokens_base, "n_groups": len(pts), "r2": float(out["r2"]),
          "rule": "lr = lr_base * sqrt(kappa), kappa = (B/B_base) * (D_base/D)^gamma"}
