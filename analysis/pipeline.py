"""One fit end to end: load, exclude, fit, bootstrap, sensitivity, frontier, fit.json and figures.

The CLI (`mdm-lab fit`) and notebooks both call `run_fit`, so a notebook reproduces exactly what the command wrote.
"""
import pathlib

import numpy as np

from analysis import allocation, figures, results, sensitivity
from analysis import table as table_lib
from analysis.resampling import bootstrap as run_bootstrap
from analysis.resampling import default_flops
from analysis.envelope import fit_envelope
from analysis.isoflop import fit_isoflop
from analysis.parametric import fit_approach3
from analysis.rundirs import load_run_dirs
from analysis.vpnls import fit_vpnls
from mdm_jax.errors import UserError

FITTERS = {"approach1": fit_envelope, "approach2": fit_isoflop, "approach3": fit_approach3, "vpnls": fit_vpnls}


def load_runs(path, *, columns: dict | None = None, convention: str | None = None, **run_dir_kw) -> table_lib.RunTable:
  """A CSV/Parquet table, or run/sweep directories (one row per run, or per eval step with per_step=True)."""
  path = pathlib.Path(path)
  if path.is_dir():
    return load_run_dirs(path, convention=convention or "total", **run_dir_kw)
  return table_lib.load_table(path, columns=columns, params_convention=convention or "unspecified")


def frontier_at(fit, flops) -> list[dict]:
  flops = np.asarray(flops, np.float64)
  if hasattr(fit, "params") and not (fit.alpha > 0 and fit.beta > 0 and fit.A > 0 and fit.B > 0):
    values = ", ".join(f"{k}={fit.params[k]:.3g}" for k in ("A", "B", "alpha", "beta"))
    raise UserError(fit.method, f"degenerate fit, no compute-optimal frontier ({values})",
                    "the runs do not trade N against D: add several sizes per budget, or use approach2")
  if hasattr(fit, "params"):
    out = allocation.allocate(fit.params, flops)
    keys = ("params", "tokens", "tokens_per_param", "loss")
  else:
    out = fit.allocate(flops)
    out["tokens_per_param"] = out["tokens"] / out["params"]
    keys = ("params", "tokens", "tokens_per_param")
  return [{"flops": float(c), **{k: float(np.asarray(out[k])[i]) for k in keys}} for i, c in enumerate(flops)]


def run_fit(table: table_lib.RunTable, method: str, out_dir=None, *, exclude_top_loss: int = 0, n_bootstrap: int = 0,
            seed: int = 0, at_flops=None, figure_formats=figures.FORMATS, with_sensitivity: bool = True, **fit_kw):
  """Returns (fit, bootstrap or None, written paths)."""
  if method not in FITTERS:
    raise UserError("method", f"unknown method {method!r}", f"use one of {', '.join(FITTERS)}")
  full = table
  if exclude_top_loss:
    table = table_lib.exclude_top_loss(table, exclude_top_loss)
  fit = FITTERS[method](table, **fit_kw)
  flops = default_flops(table) if at_flops is None else [float(c) for c in at_flops]
  fit.frontier = frontier_at(fit, flops)
  boot = run_bootstrap(fit, table, n_bootstrap, seed, at_flops=flops) if n_bootstrap else None
  if exclude_top_loss and with_sensitivity:
    fit.diagnostics["exclusion_sensitivity"] = sensitivity.exclusion_sensitivity(
        full, FITTERS[method], exclude_top_loss, **fit_kw)
  paths = []
  if out_dir is not None:
    out_dir = pathlib.Path(out_dir)
    paths.append(results.write_fit_json(fit, out_dir))
    if figure_formats:
      paths += write_figures(fit, table, boot, out_dir, figure_formats)
  return fit, boot, paths


def write_figures(fit, table, boot, out_dir, formats) -> list[pathlib.Path]:
  figs = {"frontier": figures.frontier(fit, boot, table=table)}
  if fit.method == "approach2":
    figs["isoflop_profiles"] = figures.isoflop_profiles(fit, table)
  else:
    figs["loss_vs_compute"] = figures.loss_vs_compute(table, fit)
  if fit.method in ("approach3", "vpnls"):
    figs["residuals"] = figures.residuals(fit, table)
  if boot is not None:
    figs["bootstrap"] = figures.bootstrap_histograms(boot, fit)
  paths = []
  for name, fig in figs.items():
    paths += figures.save(fig, pathlib.Path(out_dir) / name, formats)
  return paths
