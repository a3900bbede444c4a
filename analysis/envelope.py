"""Approach 1: the envelope of training curves at equal FLOPs (METHOD.md §5.1, §5.4).

At each compute C on a log grid, the lowest loss over all runs whose curve covers C (log-log interpolation of each
run's loss against its cumulative FLOPs) defines the frontier; the run achieving it gives N*(C), and its tokens at C
give D*(C). Points whose best run is the smallest or largest size covering C are design edges and are dropped. Power laws N*(C) = k_params·C^a and D*(C) = k_tokens·C^b follow by OLS in log space.

Mid-run losses are only valid when the learning-rate schedule does not depend on run length: a cosine matched to
each run's length makes every mid-run point pessimistic. The fit always carries that warning, louder when the table
says which schedule was used.
"""
import numpy as np

from analysis import table as table_lib
from analysis.results import PowerLawFit
from mdm_jax.errors import UserError

SCHEDULE_WARNING = ("Approach 1 uses mid-run losses: valid only if the LR schedule does not depend on run length "
                    "(constant/WSD with cooldowns from intermediate checkpoints); a cosine matched to each run's "
                    "length biases the envelope (METHOD §5.4)")
LENGTH_TIED = ("cosine", "linear")


def curves(table: table_lib.RunTable):
  """{run_id: (log C, log L, log D, N)} sorted by compute, from the per-step rows."""
  table_lib.require_columns(table, ("run_id", "flops", "loss", "params", "tokens"), "Approach 1")
  out = {}
  for run_id, g in table.df.groupby("run_id", sort=True):
    g = g.sort_values("flops")
    if len(g) >= 2:
      out[run_id] = (np.log(g["flops"].to_numpy(float)), np.log(g["loss"].to_numpy(float)),
                     np.log(g["tokens"].to_numpy(float)), float(g["params"].iloc[-1]))
  if len(out) < 2:
    raise UserError("step", f"Approach 1 needs training curves (>= 2 rows per run) from >= 2 runs, got {len(out)}",
                    "load per-step rows (run dirs with per_step=True, or a table with run_id and step)")
  return out


def fit_envelope(data, *, n_points: int = 40) -> PowerLawFit:
  from analysis.parametric import as_table, table_warnings
  table = as_table(data)
  runs = curves(table)
  lo = min(c[0][0] for c in runs.values())
  hi = max(c[0][-1] for c in runs.values())
  grid = np.linspace(lo, hi, n_points)
  sizes = sorted({c[3] for c in runs.values()})
  points, edge_points = [], 0
  for log_c in grid:
    best, covering = None, []
    for run_id, (lc, ll, ld, n) in runs.items():
      if lc[0] <= log_c <= lc[-1]:
        covering.append(n)
        loss = float(np.exp(np.interp(log_c, lc, ll)))
        if best is None or loss < best["loss"]:
          best = {"flops": float(np.exp(log_c)), "loss": loss, "run_id": str(run_id), "params_opt": n,
                  "tokens_opt": float(np.exp(np.interp(log_c, lc, ld)))}
    # Like an isoFLOP edge minimum: a frontier held by the smallest or largest size that covers C (or by an
    # extreme size overall) is bounded by the design, not by the trade-off, and would bias the exponent.
    if best is None:
      continue
    if best["params_opt"] in (min(covering), max(covering), sizes[0], sizes[-1]):
      edge_points += 1
      continue
    points.append(best)
  distinct = {p["run_id"] for p in points}
  if len(distinct) < 2:
    raise UserError("params", f"the envelope is made by {len(distinct)} run(s): no size trade-off to fit",
                    "add model sizes whose curves cross")
  warnings = [SCHEDULE_WARNING] + table_warnings(table)
  schedules = table.metadata.get("hyperparameters", {}).get("optim.lr_schedule")
  tied = [s for s in np.atleast_1d(schedules) if s in LENGTH_TIED] if schedules is not None else []
  if tied:
    warnings.insert(0, f"runs use a length-tied LR schedule ({', '.join(map(str, tied))}): this envelope is biased")
  estimator = {"grid_points": n_points, "interpolation": "log loss vs log FLOPs, per run",
               "power_law_fit": "OLS of log N*, log D* on log C over envelope points",
               "envelope_runs": sorted(distinct)}
  if edge_points:
    warnings.append(f"{edge_points} of {n_points} compute points dropped: their frontier sat on the smallest or "
                    "largest covering size")
  diagnostics = {"status": "ok", "n_runs": len(runs), "n_envelope_runs": len(distinct),
                 "edge_points_dropped": edge_points, "warnings": warnings}
  return PowerLawFit.from_points("approach1", points, "flops", dropped_budgets=[], estimator=estimator,
                                 diagnostics=diagnostics, input=table.provenance())
