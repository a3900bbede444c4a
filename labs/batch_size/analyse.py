"""Fits, figures and report of the batch-size study (see study.py): γ from the pilot, loss vs batch, B_crit."""
import json
import math
import pathlib

import numpy as np
import pandas as pd

from analysis import batchlaws
from analysis import table as table_lib
from mdm_jax import runio
from mdm_jax.errors import UserError


def collect(run_dirs) -> pd.DataFrame:
  """One row per finished run: batch, tokens, base and κ-resolved LR, κ, final eval and train loss."""
  rows = []
  for d in run_dirs:
    run = runio.read_json(pathlib.Path(d) / runio.RUN_JSON)
    cfg, hyper, final = run["config"], run["hyper"], run.get("final") or {}
    rows.append({"run_id": run["run_id"], "status": run["status"], "batch_size": cfg["batch"]["logical"],
                 "tokens": run["tokens_planned"], "steps": run["steps_planned"], "params": run["params"]["total"],
                 "lr": cfg["optim"]["lr"], "lr_resolved": hyper["lr"], "b1": hyper["b1"], "b2": hyper["b2"],
                 "kappa": hyper["resolved"]["sde"]["kappa"], "sde": cfg["sde"]["enabled"],
                 "loss": final.get("eval/loss", math.nan), "train_loss": final.get("train/loss", math.nan)})
  return pd.DataFrame(rows)


def fit_pilot(df: pd.DataFrame, b_base: int, d_base: int) -> dict:
  """γ and η_base from the pilot's optimal LRs (analysis.batchlaws); falls back to the best pilot LR at the base."""
  ok = df[(df.status == "done") & np.isfinite(df.loss)]
  table = table_lib.from_frame(ok[["params", "tokens", "batch_size", "lr", "loss"]], params_convention="total")
  base = ok[(ok.batch_size == b_base) & (ok.tokens == d_base)].sort_values("loss")
  try:
    law = batchlaws.lr_law(table)
    fixed = batchlaws.fit_gamma(law, batch_base=b_base, tokens_base=d_base)
    free = batchlaws.fit_gamma(law, batch_base=b_base, tokens_base=d_base, free_batch_exponent=True)
  except UserError as e:   # too few interior optima: γ is not identified at this budget
    return {"gamma": 0.0, "gamma_se": math.nan, "lr_base": float(base.lr.iloc[0]), "source": f"best pilot LR ({e})",
            "points": [], "free": None}
  return {"gamma": fixed["gamma"], "gamma_se": fixed["gamma_se"], "lr_base": fixed["lr_base"],
          "source": "analysis.batchlaws.fit_gamma (batch exponent fixed at 1/2)", "r2": fixed["r2"],
          "free": {k: free[k] for k in ("gamma", "gamma_se", "batch_exponent", "batch_exponent_se", "r2")},
          "points": [{k: p[k] for k in ("batch_size", "tokens", "lr_opt")} for p in law["points"]],
          "dropped": [{k: p.get(k) for k in ("batch_size", "tokens", "edge")} for p in law["dropped"]]}


def b_crit(df: pd.DataFrame, tolerance: float) -> dict:
  """B_crit of one loss-vs-batch curve: the first B past the best whose loss exceeds (1 + tolerance)·best,
  interpolated in log B; None (censored) if none does. The rule of analysis.batchlaws.critical_batch_sizes, which
  also fits B_crit(D) and so needs two horizons; this study has one."""
  g = df.groupby("batch_size", as_index=False)["loss"].mean().sort_values("batch_size")
  log_b, loss = np.log(g.batch_size.to_numpy(float)), g.loss.to_numpy(float)
  i_best = int(np.argmin(loss))
  threshold = (1 + tolerance) * loss[i_best]
  above = np.flatnonzero((loss > threshold) & (np.arange(loss.size) > i_best))
  if above.size == 0:
    return {"batch_crit": None, "censored_above": float(np.exp(log_b[-1])), "loss_best": float(loss[i_best])}
  j = int(above[0])
  frac = (threshold - loss[j - 1]) / (loss[j] - loss[j - 1])
  return {"batch_crit": float(np.exp(log_b[j - 1] + frac * (log_b[j] - log_b[j - 1]))), "loss_best": float(loss[i_best])}


def _figures(pilot: pd.DataFrame, batch: pd.DataFrame, kappa: pd.DataFrame, fixed: pd.DataFrame, fit: dict,
             crit: dict, tolerance: float, fig_dir):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig_dir.mkdir(parents=True, exist_ok=True)
  sweep = batch[batch.sde]
  best = sweep.groupby("batch_size").loss.min()

  fig, ax = plt.subplots(figsize=(5.6, 4.0))
  ax.plot(kappa.batch_size, kappa.loss, "o-", label="κ rule (lr·√κ, β^κ, ε/√κ, WD)")
  ax.plot(best.index, best.values, "s:", color="C0", alpha=0.6, label="κ rule, best LR of ×{¼…4}")
  ax.plot(fixed.batch_size, fixed.loss, "o-", color="C3", label="no κ (base values at every B)")
  if crit["kappa"]["batch_crit"]:
    ax.axvline(crit["kappa"]["batch_crit"], color="k", ls="--", lw=1)
    ax.text(crit["kappa"]["batch_crit"], ax.get_ylim()[1], f" B_crit≈{crit['kappa']['batch_crit']:.0f}",
            va="top", fontsize=8)
  lo = kappa.loss.min()
  ax.axhspan(lo, lo * (1 + tolerance), color="0.85", zorder=0, label=f"within {tolerance:.0%} of the best (κ)")
  ax.set_xscale("log", base=2)
  ax.set_xticks(sorted(batch.batch_size.unique()), [str(b) for b in sorted(batch.batch_size.unique())])
  ax.set_xlabel(f"batch B (sequences; physical = logical), D = {int(batch.tokens.iloc[0]):,} tokens")
  ax.set_ylabel("final eval NELBO (nats/token)")
  ax.legend(fontsize=7)
  fig.tight_layout()
  for ext in ("png", "pdf"):
    fig.savefig(fig_dir / f"loss_vs_batch.{ext}", dpi=150)
  plt.close(fig)

  fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.8))
  for (b, d), g in pilot.groupby(["batch_size", "tokens"]):
    g = g.sort_values("lr")
    line, = axes[0].plot(g.lr, g.loss, "o-", label=f"B={b}, D={d:,}")
    opt = [p["lr_opt"] for p in fit.get("points", []) if p["batch_size"] == b and p["tokens"] == d]
    if opt:
      axes[0].axvline(opt[0], color=line.get_color(), ls=":", lw=1)
  axes[0].set_xscale("log")
  axes[0].set_xlabel("learning rate (no κ)")
  axes[0].set_ylabel("final eval NELBO")
  axes[0].set_title(f"pilot: γ = {fit['gamma']:.2f} ± {fit['gamma_se']:.2f}", fontsize=9)
  axes[0].legend(fontsize=7)
  for b, g in sweep.groupby("batch_size"):
    g = g.sort_values("lr")
    axes[1].plot(g.lr / fit["lr_base"], g.loss, "o-", label=f"B={b}")
  axes[1].set_xscale("log", base=2)
  axes[1].set_xlabel("base-LR multiplier on top of κ (1 = the κ prediction)")
  axes[1].set_title("κ rule: LR sweep around its prediction", fontsize=9)
  axes[1].legend(fontsize=7)
  fig.tight_layout()
  for ext in ("png", "pdf"):
    fig.savefig(fig_dir / f"lr_sweeps.{ext}", dpi=150)
  plt.close(fig)


def report(pilot: pd.DataFrame, batch: pd.DataFrame, fit: dict, tolerance: float, out_dir: pathlib.Path,
           minutes: float) -> dict:
  """Fit B_crit with and without κ, draw the figures, write results.json and report.md; returns the summary."""
  lr_base = fit["lr_base"]
  kappa_runs = batch[batch.sde & np.isclose(batch.lr, lr_base)].sort_values("batch_size")
  fixed_runs = batch[~batch.sde].sort_values("batch_size")
  crit = {"kappa": b_crit(kappa_runs, tolerance), "fixed": b_crit(fixed_runs, tolerance)}
  _figures(pilot, batch, kappa_runs, fixed_runs, fit, crit, tolerance, out_dir / "figures")
  best_mult = {int(b): float(g.sort_values("loss").lr.iloc[0] / lr_base) for b, g in batch[batch.sde].groupby(
      "batch_size")}
  table = [{"B": int(r.batch_size), "steps": int(r.steps), "kappa": round(r.kappa, 4),
            "lr": r.lr_resolved, "b1": round(r.b1, 4), "b2": round(r.b2, 4), "loss_kappa": round(r.loss, 4),
            "loss_fixed": round(float(fixed_runs[fixed_runs.batch_size == r.batch_size].loss.iloc[0]), 4),
            "best_lr_mult_kappa": best_mult[int(r.batch_size)]} for r in kappa_runs.itertuples()]
  summary = {"gamma": fit, "b_crit": crit, "tolerance": tolerance, "lr_base": lr_base, "rows": table,
             "spread_kappa_below_crit": _spread(kappa_runs, crit["kappa"]),
             "spread_fixed_same_range": _spread(fixed_runs, crit["kappa"]), "minutes": round(minutes, 1)}
  (out_dir / "results.json").write_text(json.dumps(summary, indent=1, default=float))
  (out_dir / "report.md").write_text(_markdown(summary, pilot))
  return summary


def _spread(runs: pd.DataFrame, crit: dict) -> float:
  """max − min of the loss over batches up to B_crit (all batches if censored): 'flat' is small."""
  limit = crit["batch_crit"] or crit.get("censored_above", np.inf)
  sel = runs[runs.batch_size <= limit].loss
  return round(float(sel.max() - sel.min()), 4)


def _markdown(s: dict, pilot: pd.DataFrame) -> str:
  fit, crit = s["gamma"], s["b_crit"]
  free = fit.get("free") or {}
  kc = crit["kappa"]["batch_crit"]
  fc = crit["fixed"]["batch_crit"]
  lines = [
      "# Batch size at a fixed token budget, with and without the κ rule", "",
      "Generated by `python -m labs.batch_size.study` (study.py, analyse.py); METHOD.md §4.2–4.3. Tiny model "
      "(d = 64, L = 2, seq 64, ~0.1M non-embedding params) on the embedded Shakespeare, cosine schedule with 5% "
      "warmup, physical batch = logical batch, one seed; eval = the same 64 validation rows for every run. "
      f"Wall time {s['minutes']} min on the shared 2-core machine.", "",
      "## γ (pilot: LR sweep without κ at B ∈ {4, 16}, D ∈ {16,384, 65,536})", "",
      f"* γ = **{fit['gamma']:.3f} ± {fit['gamma_se']:.3f}** ({fit['source']}); η_base = {fit['lr_base']:.4g} at "
      "B_base = 16, D_base = 65,536.",
  ]
  if free:
    lines.append(f"* Batch exponent free: LR ∝ B^{free['batch_exponent']:.2f}±{free['batch_exponent_se']:.2f} "
                 f"(rule: 0.5), γ = {free['gamma']:.2f} ± {free['gamma_se']:.2f}.")
  for p in fit.get("points", []):
    lines.append(f"* η*(B={p['batch_size']:.0f}, D={p['tokens']:,.0f}) = {p['lr_opt']:.4g}")
  for p in fit.get("dropped", []):
    lines.append(f"* no interior optimum at B={p['batch_size']:.0f}, D={p['tokens']:,.0f}: {p['edge']}")
  lines += ["", "Tri-modal paper: γ ≈ 0.44; Complete^(d)P: γ = 1 (METHOD.md §4.4). Two horizons and one seed make "
            "this estimate rough; the standard error above is the OLS one over the optima only.", "",
            "## Loss vs batch at D = 65,536 tokens", "", "![loss vs batch](figures/loss_vs_batch.png)", "",
            "| B | steps | κ | lr (κ) | β1 | β2 | loss, κ rule | loss, no κ | best LR × on κ |",
            "|---|---|---|---|---|---|---|---|---|"]
  for r in s["rows"]:
    lines.append(f"| {r['B']} | {r['steps']} | {r['kappa']} | {r['lr']:.4g} | {r['b1']} | {r['b2']} | "
                 f"{r['loss_kappa']} | {r['loss_fixed']} | {r['best_lr_mult_kappa']:g} |")
  kc_text = f"≈ {kc:.0f} sequences" if kc else f"not reached (censored above B = {crit['kappa']['censored_above']:.0f})"
  fc_text = f"≈ {fc:.0f}" if fc else "not reached"
  lines += ["", f"* B_crit with κ (first B whose loss exceeds the best by > {s['tolerance']:.0%}, interpolated in "
            f"log B; analysis.batchlaws.critical_batch_sizes): **{kc_text}**; without κ: {fc_text}.",
            f"* Loss spread (max − min) for B ≤ B_crit: κ rule {s['spread_kappa_below_crit']} nats, no κ "
            f"{s['spread_fixed_same_range']} nats.", "", "## LR sweeps", "", "![LR sweeps](figures/lr_sweeps.png)",
            "", "Left: the pilot, dotted lines at the fitted optima. Right: at each B the κ-resolved optimiser with "
            "the base LR scaled by ¼…4; an optimum near 1 means the κ rule predicted the LR.", ""]
  return "\n".join(lines)
