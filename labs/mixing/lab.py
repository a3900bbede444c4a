"""Modality mixture ratios on tri-modal data: a simplex grid at two scales, per-modality losses, a mixture law.

Question: which token shares of text, image-text and audio-text minimise the mean validation loss of the three
modalities, and does the optimum move with scale? Recipe: every mixture of a simplex grid (vertices included) is
trained at two model sizes, each at its own FLOP budget, on the `tiny` prepared data. `report` fits the additive
mixture law L = E + A/N^α + B/D^β + 1/Σ_j C_j h_j^γ_j (and the joint law, whose scale terms depend on h, when there
are enough runs) to each modality's loss and to their mean, and reports the predicted optimal mixture per scale.
"""
import numpy as np

from labs import trimodal
from labs.report import Report
from mdm_jax.errors import UserError

SPEC, SWEEP = "mixing.yaml", "mixing"
CI_GRID = {"product": [{"zip": {"size": [32, 48], "flops": [1.0e11, 2.0e11]}}, {"mixture": {"simplex": 2}},
                       {"seed": [0]}]}   # 12 runs, ~2-3 min on 2 cores
MODALITIES = ("text", "image", "audio")
MEAN = "mean"          # the unweighted mean of the three modalities' losses: the mixture's objective
N_STARTS = 128         # random L-BFGS starts per law fit
EXTRAPOLATE = 10.0     # also predict the optimum at 10x the larger scale's N and D (joint law only moves it)


def spec(ctx, data_fields: dict | None = None):
  base = ctx.spec(SPEC)
  edits = {"set": {**base.data["set"], **(data_fields or {})}}
  if ctx.scale == "ci":
    edits["grid"] = CI_GRID
  return ctx.spec(SPEC, **edits)


def run(ctx) -> None:
  data_dir, manifest = trimodal.prepared("tiny")
  run_grid(ctx, trimodal.run_fields(data_dir, manifest))


def run_grid(ctx, fields: dict) -> None:
  ctx.sweep(SWEEP, spec(ctx, fields))


def tables(sweep_dir) -> dict:
  """{modality or `mean`: RunTable} with mix_text/mix_image/mix_audio columns, one row per run."""
  from analysis import load_runs   # pylint: disable=import-outside-toplevel
  per = load_runs(sweep_dir, modalities=True)
  groups = dict(list(per.df.groupby("modality")))
  missing = [m for m in MODALITIES if m not in groups]
  if missing:
    raise UserError(str(sweep_dir), f"no eval/loss/<modality> for {missing}", "the runs must be tri-modal")
  out = {m: per.replace(groups[m].drop(columns="modality")) for m in MODALITIES}
  mean = per.df.groupby("run_id", sort=True).agg({**{c: "first" for c in per.df.columns if c not in
                                                     ("run_id", "loss", "modality")}, "loss": "mean"})
  counts = per.df.groupby("run_id")["modality"].nunique()
  out[MEAN] = per.replace(mean[counts == len(MODALITIES)].reset_index())
  return out


def scales(table) -> list[dict]:
  """The distinct (N, D) of the grid, ascending in N."""
  df = table.df.groupby("params", sort=True)["tokens"].median()
  return [{"params": float(n), "tokens": float(d), "flops": float(table.df[table.df["params"] == n]["flops"].median())}
          for n, d in df.items()]


def fit_laws(data: dict) -> dict:
  """{target: {form: MixtureLaw}}: additive always; joint when the runs outnumber its parameters."""
  from analysis import fit_mixture_law   # pylint: disable=import-outside-toplevel
  from analysis.mixture import layout   # pylint: disable=import-outside-toplevel
  out = {}
  for target, table in data.items():
    out[target] = {form: fit_mixture_law(table, form, n_starts=N_STARTS) for form in ("additive", "joint")
                   if len(table) >= len(layout(form, len(MODALITIES))) + 1}
  return out


def optima(law, points: list[dict]) -> list[dict]:
  from analysis import optimal_mixture   # pylint: disable=import-outside-toplevel
  return [{"flops": p["flops"], **optimal_mixture(law, p["params"], p["tokens"])} for p in points]


def report(ctx) -> Report:
  from analysis import figures   # pylint: disable=import-outside-toplevel
  data = tables(ctx.sweep_dir(SWEEP))
  laws = fit_laws(data)
  points = scales(data[MEAN])
  top = points[-1]
  points.append({"params": top["params"] * EXTRAPOLATE, "tokens": top["tokens"] * EXTRAPOLATE,
                 "flops": top["flops"] * EXTRAPOLATE ** 2})
  rep = Report("Mixing lab: modality mixture ratios and a mixture law",
               "Question: which token shares (text, image, audio) minimise the mean validation loss of the three "
               "modalities, and does the optimum drift with scale?")
  best = laws[MEAN].get("joint") or laws[MEAN]["additive"]
  drift = optima(best, points)
  rep.add("Answer: predicted optimal mixture (mean loss)",
          f"From the {best.form} law fitted to the mean of the three modalities' losses"
          + (" (the joint law's scale terms depend on the mixture, so its optimum can drift)" if best.form == "joint"
             else " (the additive law's optimum cannot depend on scale)") + ":\n\n"
          + _optima_table(drift, best.domains))
  rep.add("Observed: best grid mixture per scale", _observed(data, points[:-1]))
  for target, forms in laws.items():
    for form, law in forms.items():
      warnings = law.diagnostics.get("warnings", [])
      if warnings and target == MEAN:
        rep.clean = False
      rep.add(f"{form.capitalize()} law: {target}", _law_section(law, optima(law, points), warnings))
  fig = figures.mixture_plot(best, data[MEAN], drift)
  rep.figure(f"Mixture law ({best.form}) on the mean loss", figures.save(fig, ctx.figures / "mixture_law"),
             "Left: observed vs predicted mean loss (colour: text share). Right: the law's optimal shares at the two "
             f"scales and at {EXTRAPOLATE:g}x the larger scale's N and D.")
  from labs.mixing import plots   # pylint: disable=import-outside-toplevel
  fig = plots.simplex_losses(data, points[:-1], drift[:-1])
  rep.figure("Per-modality loss over the simplex", figures.save(fig, ctx.figures / "simplex_losses"),
             "Each run's validation loss at its mixture (barycentric: corners are single-modality runs), one row "
             "per scale; the star is the mean-loss law's optimum.")
  return rep


def _observed(data, points) -> str:
  lines = ["| scale (N, D) | target | best mixture (text/image/audio) | loss |", "|---|---|---|---|"]
  for p in points:
    for target in (*MODALITIES, MEAN):
      df = data[target].df[data[target].df["params"] == p["params"]]
      best = df.loc[df["loss"].idxmin()]
      mix = "/".join(f"{best[f'mix_{m}']:.2f}" for m in MODALITIES)
      lines.append(f"| {p['params']:.3g}, {p['tokens']:.3g} | {target} | {mix} | {best['loss']:.4f} |")
  return "\n".join(lines)


def _law_section(law, opt: list[dict], warnings: list) -> str:
  params = ", ".join(f"{k} = {v:.4g}" for k, v in law.params.items())
  return (f"Parameters: {params}. Status {law.diagnostics['status']}, residual rmse "
          f"{law.diagnostics['residuals'].get('rmse', float('nan')):.3g} (log loss), objective {law.objective:.3g}.\n\n"
          + _optima_table(opt, law.domains)
          + ("\n\nWarnings:\n" + "\n".join(f"- {w}" for w in warnings) if warnings else ""))


def _optima_table(opt: list[dict], domains) -> str:
  rows = [f"| {o['params']:.3g} | {o['tokens']:.3g} | " + " / ".join(f"{o['mixture'][m]:.3f}" for m in domains)
          + f" | {o['loss']:.4f} |" for o in opt]
  return "| N | D | optimal shares (" + "/".join(domains) + ") | predicted loss |\n|---|---|---|---|\n" + "\n".join(rows)
