"""Pre-registration: fit below a compute threshold, predict the held-out larger runs, report relative errors.

For parametric fits (approach3, vpnls) every held-out run's loss is predicted from its (N, D); for Approach 2 each
held-out budget's own isoFLOP vertex is compared with the predicted N*(C). `predict_optimum` writes the prediction of
a budget's optimal loss before that budget is run (the isoflop lab's pre-registered extrapolation).
"""
import numpy as np

from analysis import allocation
from analysis import table as table_lib
from mdm_jax.errors import UserError


def split(table: table_lib.RunTable, threshold_flops: float):
  flops = table.column("flops")
  train, held = flops < threshold_flops, flops >= threshold_flops
  if not train.any() or not held.any():
    raise UserError("threshold_flops", f"{threshold_flops:.3g} leaves {int(train.sum())} rows to fit and "
                    f"{int(held.sum())} to predict", "pick a threshold inside the range of the table's flops")
  return table.replace(table.df[train]), table.replace(table.df[held])


def relative_errors(predicted, actual) -> dict:
  predicted, actual = np.asarray(predicted, np.float64), np.asarray(actual, np.float64)
  rel = (predicted - actual) / actual
  return {"relative_error": rel.tolist(), "mean_abs": float(np.mean(np.abs(rel))), "max_abs": float(np.max(np.abs(rel))),
          "bias": float(np.mean(rel)), "n": int(rel.size)}


def preregister(data, threshold_flops: float, method: str = "approach3", **fit_kw) -> dict:
  from analysis.parametric import as_table
  from analysis.pipeline import FITTERS
  table = as_table(data)
  if method not in ("approach2", "approach3", "vpnls"):
    raise UserError("method", f"pre-registration supports approach2, approach3, vpnls, not {method!r}", "")
  train, held = split(table, threshold_flops)
  fit = FITTERS[method](train, **fit_kw)
  out = {"method": method, "threshold_flops": threshold_flops, "n_fit": len(train), "n_held_out": len(held),
         "fit": {k: getattr(fit, k) for k in ("E", "A", "B", "alpha", "beta", "a", "b", "k_params", "k_tokens")
                 if hasattr(fit, k)}}
  if method == "approach2":
    from analysis.isoflop import budget_vertices
    est = fit.estimator
    kept, dropped = budget_vertices(held, est["axis"], est["vertex"], est["budget_precision"])
    if not kept:
      raise UserError("threshold_flops", f"no held-out budget has an interior optimum ({len(dropped)} dropped)",
                      "the held-out budgets need sizes around their optimum")
    c = np.array([v["budget"] for v in kept])
    out["held_out_budgets"] = c.tolist()
    out["params_opt"] = relative_errors(fit.allocate(c)["params"], [v["params_opt"] for v in kept])
  else:
    predicted = fit.predict(held.column("params"), held.column("tokens"))
    out["predicted_loss"] = predicted.tolist()
    out["actual_loss"] = held.column("loss").tolist()
    out["loss"] = relative_errors(predicted, held.column("loss"))
  return out


def predict_optimum(fit, flops) -> dict:
  """The compute-optimal N*, D*, D/N and L* a parametric fit predicts at `flops` (before running it)."""
  if not hasattr(fit, "params"):
    raise UserError("method", "optimal loss needs a parametric fit (approach3 or vpnls)", "")
  out = allocation.allocate(fit.params, flops)
  return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in out.items()}
