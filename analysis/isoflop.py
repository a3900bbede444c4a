"""Approach 2: isoFLOP profiles (METHOD.md §5.3, §5.9 pitfall 7).

Budgets are bucketed to `budget_precision` significant figures (Marin: 1.5e19, 2.4e19 → 2e19 at 1 figure), or by a
relative width for jittered budgets (see bucket_budgets). Per
budget, loss is modelled against log N (axis="params", Hoffmann) or log D (axis="tokens", Llama 3), by a parabola
(least squares on every row) or an Akima interpolant (Porian; rows at one x are averaged). The vertex gives N* or D*;
the other follows from C = 6·N·D at the budget's geometric-mean compute. A budget whose minimum sits at the sampled
edge (observed argmin at the first/last x, vertex outside the sampled range, or a parabola that is not convex) is
dropped and reported. Then N*(C) = k_params·C^a and D*(C) = k_tokens·C^b by OLS in log space.
"""
import math

import numpy as np
from scipy import interpolate

from analysis import table as table_lib
from analysis.results import PowerLawFit
from mdm_jax.errors import UserError

AXES = {"params": "log N", "tokens": "log D"}
VERTICES = ("parabola", "akima")
MIN_POINTS_PER_BUDGET = 3
MIN_BUDGETS = 2
AKIMA_SAMPLES = 2001


def round_significant(values, figures: int) -> np.ndarray:
  """Round to `figures` significant figures (Marin's buckets)."""
  v = np.asarray(values, np.float64)
  exp = np.floor(np.log10(np.abs(v)))
  step = 10.0 ** (exp - figures + 1)
  return np.round(v / step) * step


def bucket_budgets(flops, precision) -> np.ndarray:
  """Bucket labels per row. An integer precision rounds to that many significant figures; a float in (0, 1) groups
  sorted budgets whose ratio to the group's smallest is below 1 + precision (for digitised or jittered FLOPs, where
  rounding would split 9.2e18 and 1.0e19), labelled by the group's geometric mean."""
  flops = np.asarray(flops, np.float64)
  if isinstance(precision, (int, np.integer)) and precision >= 1:
    return round_significant(flops, int(precision))
  if isinstance(precision, float) and 0 < precision < 1:
    order = np.argsort(flops)
    labels = np.empty_like(flops)
    start = 0
    for i in range(1, order.size + 1):
      if i == order.size or flops[order[i]] > flops[order[start]] * (1 + precision):
        members = order[start:i]
        labels[members] = float(round_significant(np.exp(np.mean(np.log(flops[members]))), 3))
        start = i
    return labels
  raise UserError("budget_precision", f"must be an integer >= 1 (significant figures) or a float in (0, 1) "
                  f"(relative width), got {precision!r}", "e.g. 1, 2 or 0.25")


def profile_vertex(x_n, loss_n, vertex: str) -> dict:
  """Vertex of one isoFLOP profile in x = log N or log D; `edge` says why it cannot be trusted, if it cannot."""
  order = np.argsort(x_n, kind="stable")
  x, y = np.asarray(x_n, np.float64)[order], np.asarray(loss_n, np.float64)[order]
  out = {"n_points": int(x.size), "x_min": float(x[0]), "x_max": float(x[-1]), "edge": None}
  ux = np.unique(x)
  if ux.size < MIN_POINTS_PER_BUDGET:
    out["edge"] = f"only {ux.size} distinct sizes (need {MIN_POINTS_PER_BUDGET})"
    return out
  mean_y = np.array([y[x == u].mean() for u in ux])
  i_obs = int(np.argmin(mean_y))
  if vertex == "parabola":
    c2, c1, c0 = np.polyfit(x, y, 2)
    out["curvature"] = float(c2)
    if not c2 > 0:
      out["edge"] = "profile is not convex (parabola opens downwards)"
      return out
    xv = -c1 / (2 * c2)
    out.update(x_vertex=float(xv), loss_vertex=float(c0 - c1 * c1 / (4 * c2)))
  else:
    spline = interpolate.Akima1DInterpolator(ux, mean_y)
    grid = np.linspace(ux[0], ux[-1], AKIMA_SAMPLES)
    vals = spline(grid)
    j = int(np.argmin(vals))
    out.update(x_vertex=float(grid[j]), loss_vertex=float(vals[j]))
    if j in (0, grid.size - 1):
      out["edge"] = "interpolated minimum at the sampled edge"
      return out
  if i_obs in (0, ux.size - 1):
    out["edge"] = f"lowest observed loss at the {'smallest' if i_obs == 0 else 'largest'} sampled size"
  elif not ux[0] < out["x_vertex"] < ux[-1]:
    out["edge"] = "vertex outside the sampled range"
  return out


def budget_vertices(table: table_lib.RunTable, axis: str = "params", vertex: str = "parabola",
                    budget_precision: int | float = 1) -> tuple[list, list]:
  """Per-budget vertices: (kept, dropped) lists of dicts; dropped ones carry the reason in `edge`."""
  if axis not in AXES:
    raise UserError("axis", f"unknown axis {axis!r}", "use 'params' (parabola in log N) or 'tokens' (log D)")
  if vertex not in VERTICES:
    raise UserError("vertex", f"unknown vertex method {vertex!r}", "use 'parabola' or 'akima'")
  table_lib.require_columns(table, ("flops", axis, "loss"), "Approach 2")
  flops = table.column("flops")
  buckets = bucket_budgets(flops, budget_precision)
  x_all, loss_all = np.log(table.column(axis)), table.column("loss")
  kept, dropped = [], []
  for label in np.unique(buckets):
    rows = buckets == label
    budget = float(np.exp(np.mean(np.log(flops[rows]))))  # geometric mean of the bucket's actual FLOPs
    v = profile_vertex(x_all[rows], loss_all[rows], vertex)
    v.update(budget=budget, budget_label=float(label), spread=float(flops[rows].max() / flops[rows].min()))
    if v["edge"] is not None:
      dropped.append(v)
      continue
    other = budget / (6.0 * math.exp(v["x_vertex"]))
    v["params_opt"], v["tokens_opt"] = ((math.exp(v["x_vertex"]), other) if axis == "params"
                                        else (other, math.exp(v["x_vertex"])))
    kept.append(v)
  return kept, dropped


def fit_isoflop(data, *, axis: str = "params", vertex: str = "parabola", budget_precision: int | float = 1,
                min_budgets: int = MIN_BUDGETS) -> PowerLawFit:
  from analysis.parametric import as_table, table_warnings
  table = as_table(data)
  kept, dropped = budget_vertices(table, axis, vertex, budget_precision)
  if len(kept) < max(min_budgets, 2):
    why = "; ".join("{:.3g}: {}".format(d["budget_label"], d["edge"]) for d in dropped[:3])
    raise UserError("flops", f"Approach 2 needs >= {max(min_budgets, 2)} usable budgets, got {len(kept)} of "
                    f"{len(kept) + len(dropped)} ({why})",
                    "add budgets or sizes around each budget's optimum, or loosen --budget-precision")
  warnings = [f"dropped budget {d['budget_label']:.3g}: {d['edge']}" for d in dropped] + table_warnings(table)
  if len(kept) < 3:
    warnings.append(f"only {len(kept)} budgets: the exponents have no standard error")
  wide = [v["budget_label"] for v in kept if v["spread"] > 1.5]
  if wide:
    warnings.append(f"budgets {wide} bucket runs whose FLOPs differ by > 1.5x: raise --budget-precision")
  estimator = {"axis": axis, "profile": f"{vertex} in {AXES[axis]}", "vertex": vertex,
               "budget_precision": budget_precision, "budget_value": "geometric mean of the bucket's FLOPs",
               "power_law_fit": "OLS of log N*, log D* on log C"}
  diagnostics = {"status": "ok", "n_budgets": len(kept) + len(dropped), "n_used": len(kept),
                 "n_dropped": len(dropped), "edge_minima": [d["budget_label"] for d in dropped],
                 "warnings": warnings}
  return PowerLawFit.from_points("approach2", kept, "budget", dropped_budgets=dropped, estimator=estimator,
                                 diagnostics=diagnostics, input=table.provenance())
