"""Quickstart: a small isoFLOP study on the embedded Shakespeare; compute-optimal N*(C), D*(C) with bootstrap CIs.

Question: for a masked-diffusion language model, how should a training budget C be split between parameters N and
tokens D? Recipe (Hoffmann et al. 2022; METHOD.md §5): isoflop.yaml trains four sizes around a guessed N*(C) at
each of three budgets, each run's steps derived from C by the trainer's FLOP accounting. Approach 2 fits a parabola
in log N per budget and power laws N* ∝ C^a, D* ∝ C^b through the vertices; Approach 3 and VPNLS fit
L(N, D) = E + A/N^α + B/D^β to every run. Bootstrap over runs gives percentile CIs. A budget whose minimum sits at
its smallest or largest size cannot locate N* and is excluded from Approach 2 (the report says so).
"""
import os

import numpy as np

from analysis import figures, load_runs
from analysis.pipeline import run_fit
from labs.report import Report
from mdm_jax.data import text
from mdm_jax.errors import UserError
from sweeps.plan import make_plan

SPEC = "isoflop.yaml"
SWEEPS = {"default": "isoflop", "ci": "isoflop_ci"}   # one sweep per scale: their runs never mix in a fit
CI = {   # --scale ci: three smaller budgets x the four smallest sizes (~2/3 of the default's steps)
    "isoflop": {"budgets": [1.5e+11, 2.2e+11, 3.3e+11], "sizes": 4, "spread": 1.6, "params": "total",
                "n_star": [1.4e+4, 1.4e+4, 1.4e+4]},
}
APPROACH2 = {"budget_precision": 2}   # budgets to 2 significant figures: 1.5e11 and 2.2e11 stay apart
N_BOOTSTRAP = {"default": 1000, "ci": 200}
METHODS = {"approach2": "Approach 2 (isoFLOP parabolas)", "approach3": "Approach 3 (parametric L(N, D))",
           "vpnls": "VPNLS (L(N, D) by variable projection)"}
# Warnings about how well 12 runs pin down the five parameters of L(N, D) (E, A, B drift to a bound or past the start
# grid when the irreducible loss is not identified): listed as notes; the bootstrap CIs of a and b carry them.
IDENTIFIABILITY = ("is poorly identified", "the exponents have no standard error", "edge of the start grid",
                   "is on a bound", "collapsed towards 0")


def spec(ctx):
  return ctx.spec(SPEC, **CI) if ctx.scale == "ci" else ctx.spec(SPEC)


def run(ctx) -> None:
  _compile_cache()
  ctx.sweep(SWEEPS[ctx.scale], spec(ctx))


def _compile_cache() -> None:
  """Compiled programs persist under the mdm-lab cache (unless JAX_COMPILATION_CACHE_DIR says where), so a resumed
  or repeated quickstart skips XLA compilation; the first run compiles as usual."""
  import jax   # pylint: disable=import-outside-toplevel
  if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    jax.config.update("jax_compilation_cache_dir", str(text.cache_dir() / "jax-compile"))


def table(ctx):
  """Final validation losses of this scale's finished runs that the current spec plans (an edited spec's stale runs
  are left out)."""
  sweep_dir = ctx.sweep_dir(SWEEPS[ctx.scale])
  if not (sweep_dir / "runs").is_dir():
    raise UserError(str(sweep_dir), f"no runs of the {ctx.scale!r} scale",
                    f"run `mdm-lab lab run {ctx.lab_dir} --out {ctx.out}" + (" --scale ci`" if ctx.scale == "ci"
                                                                              else "`") + " first, or pass its --scale")
  runs = load_runs(sweep_dir)
  planned = {r.run_id for r in make_plan(spec(ctx)).runs}
  return runs.replace(runs.df[runs.df.run_id.isin(planned)].reset_index(drop=True))


def budgets(ctx) -> list[float]:
  return [float(c) for c in spec(ctx).data["isoflop"]["budgets"]]


def fits(ctx, table_=None, n_bootstrap=None) -> dict:
  """{method: (fit, bootstrap) or UserError}: each fit with CIs at the grid's budgets and 10x the largest; fit.json
  files under OUT/fits/METHOD/ (the same files `mdm-lab fit` writes)."""
  table_ = table(ctx) if table_ is None else table_
  n_bootstrap = N_BOOTSTRAP[ctx.scale] if n_bootstrap is None else n_bootstrap
  at = budgets(ctx) + [10 * max(budgets(ctx))]
  out = {}
  for method in METHODS:
    try:
      fit, boot, _ = run_fit(table_, method, ctx.out / "fits" / method, n_bootstrap=n_bootstrap, at_flops=at,
                             figure_formats=(), **(APPROACH2 if method == "approach2" else {}))
      out[method] = (fit, boot)
    except UserError as e:   # e.g. Approach 2 with fewer than two interior minima: reported, not fatal
      out[method] = e
  return out


def report(ctx) -> Report:
  runs, grid = table(ctx), budgets(ctx)
  results = fits(ctx, runs)
  ok = {m: r for m, r in results.items() if not isinstance(r, Exception)}
  rep = Report("Quickstart: compute-optimal scaling of a masked-diffusion LM on Shakespeare",
               "**Question.** How should a training budget C be split between parameters N and tokens D? "
               f"{len(runs)} runs: {len(grid)} budgets ({', '.join(f'{c:.2g}' for c in grid)} FLOPs) x sizes around "
               "each budget's guessed optimum, on the embedded Shakespeare text.\n\n**Answer.** " + _answer(ok))
  rep.add("Fitted exponents", _exponent_table(results))
  a2 = ok.get("approach2")
  fig = figures.isoflop_profiles(a2[0], runs) if a2 else figures.loss_vs_compute(runs)
  rep.figure("isoFLOP profiles", figures.save(fig, ctx.figures / "isoflop"),
             "Final validation loss (nats/token) against total parameters, one colour per budget; stars: parabola "
             "vertices (N* per budget); hollow points: budgets excluded for an edge minimum.")
  dense = np.geomspace(min(grid) / 2, 10 * max(grid), 60)
  for method, label in (("approach2", ""), ("approach3", "_approach3")):
    if method in ok:
      fit, boot = ok[method]
      rep.figure(f"Compute-optimal frontier, {METHODS[method]}",
                 figures.save(figures.frontier(fit, boot, flops=dense, table=runs), ctx.figures / f"frontier{label}"),
                 f"N*(C) and D*(C) with the {_level(boot)} bootstrap band ({boot.summary['n_resamples']} resamples "
                 "over runs); dots: per-budget isoFLOP vertices.")
  rep.add("Frontier at each budget", _frontier_table(ok, grid + [10 * max(grid)]))
  diagnostics, rep.clean = _diagnostics(results)
  rep.add("Fit diagnostics", diagnostics)
  rep.add("Reproduce", f"`mdm-lab fit {ctx.sweep_dir(SWEEPS[ctx.scale])} --method approach2 --bootstrap 1000 --out "
          f"DIR` refits one method from the command line; `{ctx.lab_dir}/analysis.ipynb` (with MDM_LAB_LAB_OUT="
          f"{ctx.out}) loads these runs into the analysis API. fit.json files: `{ctx.out / 'fits'}`.")
  return rep


def _level(boot) -> str:
  return f"{100 * boot.summary['level']:.0f}%"


def _ci(boot, name, j=None, fmt=".3f") -> str:
  q = boot.summary["quantities"].get(name) if boot else None
  q = q[j] if isinstance(q, list) else q
  return f" [{q['ci'][0]:{fmt}}, {q['ci'][1]:{fmt}}]" if q and q.get("n") else ""


def _answer(ok: dict) -> str:
  parts = [f"{METHODS[m].split(' (')[0]}: a = {fit.a:.3f}{_ci(boot, 'a')}, b = {fit.b:.3f}{_ci(boot, 'b')}"
           for m, (fit, boot) in ok.items()]
  return ("N* ∝ C^a and D* ∝ C^b with " + "; ".join(parts) + " (95% bootstrap CIs in brackets)."
          if parts else "no fit succeeded: see the diagnostics.")


def _exponent_table(results: dict) -> str:
  lines = ["| method | a (N* ∝ C^a) | b (D* ∝ C^b) | bootstrap refits |", "|---|---|---|---|"]
  for method, r in results.items():
    if isinstance(r, Exception):
      lines.append(f"| {METHODS[method]} | failed: {r} | | |")
      continue
    fit, boot = r
    ok_refits = boot.samples["a"][np.isfinite(boot.samples["a"])].size if boot else 0
    lines.append(f"| {METHODS[method]} | {fit.a:.3f}{_ci(boot, 'a')} | {fit.b:.3f}{_ci(boot, 'b')} | "
                 f"{ok_refits} of {boot.summary['n_resamples'] if boot else 0} usable |")
  return "\n".join(lines) + "\n\nBrackets: 95% percentile CIs over resampled runs; a + b = 1 under C ∝ N·D."


def _frontier_table(ok: dict, at: list) -> str:
  lines = ["| C (FLOPs) | " + " | ".join(f"N*, {m} | D*, {m}" for m in ok) + " |",
           "|---|" + "---|---|" * len(ok)]
  for j, c in enumerate(at):
    cells = []
    for fit, boot in ok.values():
      row = fit.frontier[j]
      cells += [f"{row['params']:.3g}{_ci(boot, 'params_opt', j, '.3g')}",
                f"{row['tokens']:.3g}{_ci(boot, 'tokens_opt', j, '.3g')}"]
    lines.append(f"| {c:.3g}{' (extrapolated)' if j == len(at) - 1 else ''} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n\nN counts every parameter (embeddings and head included); D = C / (train FLOPs per token)."


def _diagnostics(results: dict) -> tuple[str, bool]:
  """Markdown of the per-budget vertices and each fit's warnings. Clean = every budget's minimum is interior (so
  Approach 2 uses every budget), every fit converged, and no warning beyond parameter identifiability remains."""
  lines, clean = [], True
  a2 = results["approach2"]
  if isinstance(a2, Exception):
    lines.append(f"- Approach 2 failed: {a2}")
    clean = False
  else:
    fit = a2[0]
    lines += ["| budget | sizes N | vertex N* | loss at vertex | status |", "|---|---|---|---|---|"]
    for v in sorted(fit.points + fit.dropped_budgets, key=lambda v: v["budget"]):
      vertex = f"{np.exp(v['x_vertex']):.3g} | {v['loss_vertex']:.4f}" if "x_vertex" in v else "- | -"
      lines.append(f"| {v['budget_label']:.2g} | {np.exp(v['x_min']):.3g}–{np.exp(v['x_max']):.3g} | {vertex} | "
                   + (f"excluded: {v['edge']}" if v["edge"] else "interior minimum") + " |")
    lines.append("")
    if fit.dropped_budgets:
      clean = False
      lines.append(f"- {len(fit.dropped_budgets)} budget(s) excluded from Approach 2 for an edge minimum: move "
                   "`isoflop.n_star` in isoflop.yaml towards the observed optimum or widen `isoflop.spread`.")
  for method, r in results.items():
    if isinstance(r, Exception):
      clean = False
      continue
    fit = r[0]
    status = fit.diagnostics.get("status", "ok")
    warnings = fit.diagnostics.get("warnings", [])
    serious = [w for w in warnings if not any(p in w for p in IDENTIFIABILITY)]
    clean = clean and not serious and (status == "ok" or str(status).startswith("converged"))
    lines.append(f"- {METHODS[method]}: status {status}" + ("" if warnings else ", no warnings"))
    lines += [f"  - {'note' if w not in serious else 'warning'}: {w}" for w in warnings]
  lines.append("")
  lines.append("**Diagnostics clean**: every budget's minimum is interior and every fit converged; notes mark L(N, D) "
               "parameters these runs do not identify (read a, b and the frontier, with their CIs)." if clean else
               "**Diagnostics need attention** (see the warnings above).")
  return "\n".join(lines), clean
