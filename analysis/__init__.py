"""Scaling-law analysis: run tables in, laws, CIs, diagnostics and paper figures out (METHOD.md §4–6).

    from analysis import load_runs, fit_approach3, fit_isoflop, bootstrap, allocate
    runs = load_runs("sweep_dir")                # or a CSV/Parquet table
    fit = fit_approach3(runs)                    # 4,500-start log-Huber fit, with diagnostics
    ci = bootstrap(fit, runs, n_resamples=4000)  # percentile CIs of parameters and of N*, D*, L* at C

Names resolve lazily (PEP 562), so `import analysis` — and the CLI's registration — stays instant.
"""
import importlib

_EXPORTS = {
    "RunTable": "analysis.table", "from_frame": "analysis.table", "load_table": "analysis.table",
    "exclude_top_loss": "analysis.table",
    "load_run_dirs": "analysis.rundirs",
    "load_runs": "analysis.pipeline", "run_fit": "analysis.pipeline", "FITTERS": "analysis.pipeline",
    "fit_approach3": "analysis.parametric", "start_grid": "analysis.parametric",
    "fit_vpnls": "analysis.vpnls",
    "fit_isoflop": "analysis.isoflop", "budget_vertices": "analysis.isoflop",
    "fit_envelope": "analysis.envelope",
    "bootstrap": "analysis.resampling", "Bootstrap": "analysis.resampling",
    "allocate": "analysis.allocation", "flops_for_loss": "analysis.allocation", "exponents": "analysis.allocation",
    "fit_per_modality": "analysis.modality",
    "fit_mixture_law": "analysis.mixture", "optimal_mixture": "analysis.mixture", "mixture_drift": "analysis.mixture",
    "optimal_batch_sizes": "analysis.batchlaws", "critical_batch_sizes": "analysis.batchlaws",
    "lr_law": "analysis.batchlaws", "fit_gamma": "analysis.batchlaws",
    "preregister": "analysis.prediction", "predict_optimum": "analysis.prediction",
    "exclusion_sensitivity": "analysis.sensitivity",
    "ParametricFit": "analysis.results", "PowerLawFit": "analysis.results", "write_fit_json": "analysis.results",
    "read_fit_json": "analysis.results",
    "figures": "analysis.figures",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
  if name not in _EXPORTS:
    raise AttributeError(f"module 'analysis' has no attribute {name!r}")
  module = importlib.import_module(_EXPORTS[name])
  value = module if name == "figures" else getattr(module, name)
  globals()[name] = value
  return value


def __dir__():
  return __all__
