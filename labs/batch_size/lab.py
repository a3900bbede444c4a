"""Batch size at a fixed token budget: loss vs physical batch (16×) with and without the κ rule; γ and B_crit.

METHOD.md §4.2–4.5. Stage 1 (pilot.yaml): LR sweeps without κ at B ∈ {4, 16} and D ∈ {D_base/4, D_base} give the
optimal LR per (B, D), hence γ and η_base (`analysis.batchlaws.fit_gamma`). Stage 2 (batch.yaml): at D = D_base,
B = 4…64 sequences (physical = logical), with the κ rule at η_base × {½, 1, 2} and without it at η_base. The report
plots final loss vs B for both arms and marks B_crit (`analysis.batchlaws.critical_batch_sizes`): the claim is a
flat loss below B_crit with κ and a degraded one without. Runs of equal shape train as one vmapped program.
"""
import json
import math

import numpy as np
from matplotlib import ticker
from matplotlib.figure import Figure
from scipy import stats

from analysis import batchlaws, figures, load_runs
from labs.report import Report
from mdm_jax.errors import UserError
from sweeps.plan import make_plan

RUNNER = "vmap"   # equal-shape runs (one batch size): one vmapped program each
B_BASE, TOLERANCE = 16, 0.01
CI_GRIDS = {   # --scale ci: the same two stages on a reduced grid (D_base = 16,384 tokens, ~2–3 min)
    "pilot": {"product": [{"zip": {"batch": [4, 16], "physical_batch": [4, 16], "train.eval_batches": [16, 4]}},
                          {"tokens": [4096, 16384]}, {"lr": [3.0e-3, 1.2e-2, 4.8e-2]}]},
    "batch": {"product": [{"zip": {"batch": [4, 16, 64], "physical_batch": [4, 16, 64],
                                   "train.eval_batches": [16, 4, 1]}}, {"tokens": [16384]},
                          {"union": [{"sde.enabled": [True], "lr": [1.0e-2]}, {"sde.enabled": [False], "lr": [1.0e-2]}]}]},
}


def _spec(ctx, name: str, **edits):
  spec = ctx.spec(f"{name}.yaml")
  if ctx.scale == "ci":
    edits["grid"] = CI_GRIDS[name]
    if name == "batch":
      edits["set"] = {**spec.data["set"], "sde.base_tokens": 16384, **edits.get("set", {})}
  return ctx.spec(f"{name}.yaml", **edits) if edits else spec


def _rescaled(node, factor: float):
  """The grid with every `lr` value multiplied by FACTOR (batch.yaml's LRs are relative to its optim.lr)."""
  if isinstance(node, dict):
    return {k: ([v * factor for v in val] if k == "lr" else _rescaled(val, factor)) for k, val in node.items()}
  return [_rescaled(n, factor) for n in node] if isinstance(node, list) else node


def pilot_fit(ctx) -> dict:
  """γ and η_base from the pilot's LR optima; if γ is not identified, η_base = the best pilot LR at (B_base, D_base)."""
  table = load_runs(ctx.sweep_dir("pilot"))
  d_base = float(table.df.tokens.max())
  try:
    law = batchlaws.lr_law(table)
    fit = batchlaws.fit_gamma(law, batch_base=B_BASE, tokens_base=d_base)
    free = batchlaws.fit_gamma(law, batch_base=B_BASE, tokens_base=d_base, free_batch_exponent=True)
  except UserError as e:
    base = table.df[(table.df.batch_size == B_BASE) & (table.df.tokens == d_base)].sort_values("loss")
    return {"gamma": None, "lr_base": float(base.lr.iloc[0]), "error": str(e), "table": table, "tokens_base": d_base}
  dof = fit["n_groups"] - 2   # intercept and slope in log D
  t95 = float(stats.t.ppf(0.975, dof)) if dof > 0 else math.nan
  return {**fit, "gamma_ci95": (fit["gamma"] - t95 * fit["gamma_se"], fit["gamma"] + t95 * fit["gamma_se"]),
          "free": free, "law": law, "table": table, "tokens_base": d_base}


def batch_spec(ctx, fit: dict):
  """batch.yaml with η_base and γ from the pilot (its LRs rescaled by η_base / its optim.lr)."""
  spec = _spec(ctx, "batch")
  set_ = {**spec.data["set"], "optim.lr": fit["lr_base"], "sde.gamma": round(fit["gamma"] or 0.0, 6)}
  factor = fit["lr_base"] / spec.data["set"]["optim.lr"]
  return ctx.spec("batch.yaml", set=set_, grid=_rescaled(spec.data["grid"], factor))


def run(ctx) -> None:
  ctx.sweep("pilot", _spec(ctx, "pilot"))
  ctx.sweep("batch", batch_spec(ctx, pilot_fit(ctx)))


def batch_table(ctx, fit: dict):
  """The stage-2 runs planned for this η_base: loss, batch, κ arm or not, LR multiplier, κ-resolved values."""
  df = load_runs(ctx.sweep_dir("batch")).df
  df = df[df.run_id.isin({r.run_id for r in make_plan(batch_spec(ctx, fit)).runs})].copy()
  if df.empty:
    raise UserError(str(ctx.sweep_dir("batch")), f"no finished stage-2 runs of the {ctx.scale!r} grid at "
                    f"η_base = {fit['lr_base']:.4g}", "give the --scale the lab ran with, or run it to completion")
  runs = [json.loads((ctx.sweep_dir("batch") / "runs" / r / "run.json").read_text()) for r in df.run_id]
  df["sde"] = [r["config"]["sde"]["enabled"] for r in runs]
  df["kappa"] = [r["hyper"]["resolved"]["sde"]["kappa"] for r in runs]
  df["lr_resolved"], df["b2"] = [r["hyper"]["lr"] for r in runs], [r["hyper"]["b2"] for r in runs]
  df["steps"] = [r["steps_planned"] for r in runs]
  df["mult"] = (df.lr / fit["lr_base"]).round(6)
  return df


def _crit(curve) -> dict:
  out = batchlaws.critical_batch_sizes(curve[["batch_size", "tokens", "params", "loss"]], tolerance=TOLERANCE)
  return out["points"][0] if out["points"] else {"batch_crit": None, **out["censored"][0]}


@figures.styled
def _figure(df, arms: dict, crit: dict, stem):
  fig = Figure(figsize=(5.0, 3.5), layout="constrained")
  ax = fig.subplots()
  styles = {"κ rule, η_base": ("o-", "C0"), "κ rule, best of η_base×{½,1,2}": ("s:", "C0"), "no κ": ("o-", "C3")}
  for name, curve in arms.items():   # error bars: half the range over seeds
    ax.errorbar(curve.batch_size, curve.loss, yerr=curve.half_range, fmt=styles[name][0], color=styles[name][1],
                capsize=2, label=name)
  best = arms["κ rule, η_base"].loss.min()
  ax.axhspan(best, best * (1 + TOLERANCE), color="0.88", zorder=0, label=f"within {TOLERANCE:.0%} of the best (κ)")
  if crit["κ rule, η_base"]["batch_crit"]:
    b = crit["κ rule, η_base"]["batch_crit"]
    ax.axvline(b, color="k", ls="--", lw=1)
    ax.text(b, ax.get_ylim()[1], f" B_crit ≈ {b:.0f}", va="top", fontsize=8)
  batches = sorted(df.batch_size.unique())
  ax.set_xscale("log", base=2)
  ax.set_xticks(batches, [str(int(b)) for b in batches])
  ax.set_xlabel(f"batch B (sequences; physical = logical), D = {int(df.tokens.iloc[0]):,} tokens")
  ax.set_ylabel("final eval NELBO (nats/token)")
  ax.legend(fontsize=7)
  return figures.save(fig, stem)


@figures.styled
def _pilot_figure(fit: dict, stem):
  fig = Figure(figsize=(4.4, 3.3), layout="constrained")
  ax = fig.subplots()
  optima = {(p["batch_size"], p["tokens"]): p["lr_opt"] for p in fit.get("law", {}).get("points", [])}
  for (b, d), g in fit["table"].df.groupby(["batch_size", "tokens"]):
    g = g.sort_values("lr")
    line, = ax.plot(g.lr, g.loss, "o-", label=f"B={b:.0f}, D={d:,.0f}")
    if (b, d) in optima:
      ax.axvline(optima[b, d], color=line.get_color(), ls=":", lw=1)
  ax.set_xscale("log")
  ax.xaxis.set_minor_formatter(ticker.NullFormatter())
  ax.set_xlabel("learning rate (no κ)")
  ax.set_ylabel("final eval NELBO (nats/token)")
  ax.legend(fontsize=7)
  return figures.save(fig, stem)


def results(ctx) -> dict:
  """The pilot fit, the loss-vs-batch curve of each arm, its B_crit and its loss spread (max − min) over B."""
  fit = pilot_fit(ctx)
  df = batch_table(ctx, fit)
  first = {k: (k, "first") for k in ("tokens", "params", "steps", "kappa", "lr_resolved", "b2")}
  df = df.groupby(["sde", "mult", "batch_size"], as_index=False).agg(   # mean over seeds; half-range = noise
      loss=("loss", "mean"), half_range=("loss", lambda x: (x.max() - x.min()) / 2), seeds=("loss", "size"), **first)
  kappa, fixed = df[df.sde], df[~df.sde]
  arms = {"κ rule, η_base": kappa[np.isclose(kappa.mult, 1.0)].sort_values("batch_size"),
          "κ rule, best of η_base×{½,1,2}": kappa.sort_values("loss").groupby("batch_size", as_index=False).first(),
          "no κ": fixed.sort_values("batch_size")}
  return {"fit": fit, "df": df, "arms": arms, "crit": {name: _crit(curve) for name, curve in arms.items()},
          "spread": {name: float(c.loss.max() - c.loss.min()) for name, c in arms.items()}}


def _gap(arms) -> float:
  both = arms["κ rule, η_base"].merge(arms["no κ"], on="batch_size", suffixes=("_kappa", "_fixed"))
  return float((both.loss_kappa - both.loss_fixed).mean())


def report(ctx) -> Report:
  res = results(ctx)
  fit, df, arms, crit, spread = (res[k] for k in ("fit", "df", "arms", "crit", "spread"))
  rep = Report("Batch size at a fixed token budget, with and without the κ rule", __doc__.split("\n\n")[1])
  if fit["gamma"] is None:
    rep.clean = False
    rep.add("γ (pilot)", f"γ not identified: {fit['error']}. η_base = best pilot LR = {fit['lr_base']:.4g}.")
  else:
    free = fit["free"]
    lines = [f"- γ = **{fit['gamma']:.3f} ± {fit['gamma_se']:.3f}** (OLS SE; 95% t-interval "
             f"[{fit['gamma_ci95'][0]:.2f}, {fit['gamma_ci95'][1]:.2f}], {fit['n_groups']} LR optima, batch exponent "
             f"fixed at ½); η_base = {fit['lr_base']:.4g} at B_base = {B_BASE}, D_base = {fit['tokens_base']:,.0f}.",
             f"- Batch exponent free: η* ∝ B^{free['batch_exponent']:.2f}±{free['batch_exponent_se']:.2f} (rule: ½), "
             f"γ = {free['gamma']:.2f} ± {free['gamma_se']:.2f}.",
             *[f"- η*(B={p['batch_size']:.0f}, D={p['tokens']:,.0f}) = {p['lr_opt']:.4g}" for p in fit["law"]["points"]],
             *[f"- no interior LR optimum at B={p['batch_size']:.0f}, D={p['tokens']:,.0f} ({p['edge']})"
               for p in fit["law"]["dropped"]],
             "", "Reference values: γ ≈ 0.44 (tri-modal paper), γ = 1 (Complete^(d)P); METHOD.md §4.4."]
    lo, hi = fit["gamma_ci95"]
    if lo < 0 and hi > 1:   # cannot tell "no horizon effect" from Complete^(d)P's γ = 1
      rep.clean = False
      lines.append("\n**Diagnostic:** the 95% interval contains both 0 and 1, so γ is not determined here; the "
                   "LR optima move by less than the run-to-run noise (more seeds or horizons would pin it down).")
    rep.add("γ (pilot: LR sweeps without κ)", "\n".join(lines))
  rep.figure("Pilot LR sweeps", _pilot_figure(fit, ctx.figures / "pilot_lr"),
             "Final loss vs LR per (B, D) without κ; dotted: the fitted optima that give γ.")
  rows = ["| B | steps | κ | lr (κ) | β2 (κ) | loss, κ rule | loss, no κ | best LR × (κ) |", "|---|---|---|---|---|---|---|---|"]
  best_mult = arms["κ rule, best of η_base×{½,1,2}"].set_index("batch_size").mult
  no_kappa = arms["no κ"].set_index("batch_size")
  for r in arms["κ rule, η_base"].itertuples():
    n = no_kappa.loc[r.batch_size] if r.batch_size in no_kappa.index else None
    rows.append(f"| {r.batch_size:.0f} | {r.steps} | {r.kappa:.3g} | {r.lr_resolved:.4g} | {r.b2:.4f} | "
                f"{r.loss:.4f} ± {r.half_range:.4f} | " + (f"{n.loss:.4f} ± {n.half_range:.4f}" if n is not None else "-")
                + f" | {best_mult.get(r.batch_size, math.nan):g} |")
  seeds = "–".join(str(n) for n in sorted({int(df.seeds.min()), int(df.seeds.max())}))
  rows.append(f"\nLosses: mean over {seeds} seed(s) ± half their range (the run-to-run noise).")
  crit_text = {n: (f"≈ {c['batch_crit']:.1f}" if c["batch_crit"] else f"not reached (censored above {c['batch_max']:.0f})")
               for n, c in crit.items()}
  summary = [f"- B_crit (first B past the best whose loss exceeds it by > {TOLERANCE:.0%}, interpolated in log B): "
             + "; ".join(f"{n}: **{t}**" for n, t in crit_text.items()) + ".",
             f"- Loss spread (max − min) across B = {df.batch_size.min():.0f}…{df.batch_size.max():.0f} "
             f"({df.batch_size.max() / df.batch_size.min():.0f}×): " + "; ".join(f"{n}: {s:.4f} nats" for n, s in
                                                                                  spread.items()) + ".",
             f"- κ rule minus no κ (η_base), mean over B: {_gap(arms):+.4f} nats; typical seed half-range "
             f"{df.half_range.median():.4f} nats."]
  rep.figure("Loss vs batch size", _figure(df, arms, crit, ctx.figures / "loss_vs_batch"),
             "Final eval loss at a fixed token budget; the grey band is within the B_crit tolerance of the κ arm's best.")
  rep.add("Numbers", "\n".join(rows + [""] + summary))
  return rep
