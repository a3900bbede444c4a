"""Noise schedules per modality: linear vs cosine vs polynomial, final validation ELBO and its estimator variance.

In continuous time the ELBO does not depend on the schedule α_t (METHOD.md §1.3; the denoiser does not see t), so
a schedule can only matter through optimisation: it changes the distribution of masking rates the model trains on
and the variance of the one-t-per-sequence loss estimate. This lab trains each schedule at two sizes and two seeds
on the tri-modal `tiny` data, then evaluates every final model with every schedule's estimator (same sequences,
same random numbers): the linear-schedule ELBO compares the models with one yardstick, the estimator's single-t
variance (mdm_jax.sampling.evaluate) compares the schedules on the same model, and own-vs-linear agreement checks
the invariance.
"""
import json
import pathlib

import numpy as np

from labs import trimodal
from labs.report import Report

MODALITIES = ("text", "image", "audio")
SCHEDULES = ("linear", "cosine", "polynomial", "loglinear")   # evaluated; the spec trains the first three
EVAL_FILE = "schedule_eval.json"
SWEEP = "schedules"
CI = {"set": {"train.steps": 20, "train.eval_every": 20, "train.checkpoint_every": 20, "train.log_every": 10,
              "train.eval_batches": 1, "batch.logical": 8, "batch.physical": 8},
      "grid": {"product": [{"size": ["xxs"]}, {"diffusion.schedule": ["linear", "cosine"]}, {"seed": [0]}]}}


def t_samples(ctx) -> int:
  return 4 if ctx.scale == "ci" else 8


def spec(ctx, data_fields: dict):
  """The sweep at the context's scale, on the data DATA_FIELDS point at (`trimodal.run_fields`)."""
  fields = {**ctx.spec("schedules.yaml").data["set"], **data_fields}
  if ctx.scale == "ci":
    return ctx.spec("schedules.yaml", set={**fields, **CI["set"]}, grid=CI["grid"])
  return ctx.spec("schedules.yaml", set=fields)


def run(ctx) -> None:
  sweep_dir = ctx.sweep(SWEEP, spec(ctx, trimodal.run_fields(*trimodal.prepared("tiny"))))
  for run_json in sorted(sweep_dir.glob("runs/*/run.json")):
    if json.loads(run_json.read_text()).get("status") == "done" and not (run_json.parent / EVAL_FILE).is_file():
      evaluate_run(run_json.parent, t_samples(ctx))


def evaluate_run(run_dir: pathlib.Path, k: int) -> dict:
  """The run's final model on its validation batches under each schedule's ELBO estimator -> RUN_DIR/EVAL_FILE."""
  import dataclasses   # pylint: disable=import-outside-toplevel
  from mdm_jax.data import pipeline   # pylint: disable=import-outside-toplevel
  from mdm_jax.runio import write_json_atomic   # pylint: disable=import-outside-toplevel
  from mdm_jax.sampling import evaluate, runs   # pylint: disable=import-outside-toplevel
  loaded = runs.load(run_dir)
  batches = [b for group in pipeline.DataSource(loaded.cfg).eval.values() for b in group]
  result = {s: evaluate.elbo(loaded.apply, batches, dataclasses.replace(loaded.cfg.diffusion, schedule=s),
                             loaded.vocab.mask_id, t_samples=k, seed=0) for s in SCHEDULES}
  write_json_atomic(run_dir / EVAL_FILE, {"checkpoint_step": loaded.step, "by_schedule": result})
  return result


def table(sweep_dir):
  """One row per (finished run, modality, evaluation schedule): trained schedule, size, seed, ELBO, se_mc, single-t
  variance, and the trainer's own final eval loss."""
  import pandas as pd   # pylint: disable=import-outside-toplevel
  from analysis import load_runs   # pylint: disable=import-outside-toplevel
  rows = []
  for run in load_runs(sweep_dir).df.itertuples():
    run_dir = pathlib.Path(sweep_dir) / "runs" / run.run_id
    if not (run_dir / EVAL_FILE).is_file():
      continue
    record = json.loads((run_dir / "run.json").read_text())
    by_schedule = json.loads((run_dir / EVAL_FILE).read_text())["by_schedule"]
    model = record["config"]["model"]
    for m in MODALITIES:
      for s, res in by_schedule.items():
        if m in res:
          rows.append({"run_id": run.run_id, "schedule": record["config"]["diffusion"]["schedule"],
                       "size": f"d{model['d_model']}×{model['n_layers']}", "params": run.params, "seed": run.seed,
                       "modality": m, "eval_schedule": s, "elbo": res[m]["nats_per_token"], "se_mc": res[m]["se_mc"],
                       "single_t_var": res[m]["single_t_var"], "trainer_eval": record["final"].get(f"eval/loss/{m}")})
  return pd.DataFrame(rows)


def elbo_summary(df):
  """Per (modality, size, trained schedule): the linear-estimator ELBO's seed mean, seed half-range, mean se_mc."""
  lin = df[df.eval_schedule == "linear"].sort_values(["params", "schedule"], key=lambda c: c.map(
      SCHEDULES.index) if c.name == "schedule" else c, kind="stable")
  return lin.groupby(["modality", "size", "schedule"], sort=False).agg(
      elbo=("elbo", "mean"), spread=("elbo", lambda x: (x.max() - x.min()) / 2), se_mc=("se_mc", "mean"),
      seeds=("seed", "nunique")).reset_index()


def variance_summary(df):
  """Per (modality, evaluation schedule): geometric mean over all models of the single-t variance, and its ratio
  to the linear schedule's on the same models."""
  logv = df.assign(logv=np.log(df.single_t_var)).pivot_table("logv", ["modality", "run_id"], "eval_schedule")
  order = [s for s in SCHEDULES if s in logv.columns]
  out = np.exp(logv.groupby("modality").mean())[order]
  ratio = np.exp(logv.sub(logv["linear"], axis=0).groupby("modality").mean())[order]
  return out, ratio


def invariance(df):
  """Own-schedule ELBO minus linear-estimator ELBO of each model not trained with linear, in units of their
  combined se_mc."""
  own = df[(df.eval_schedule == df.schedule) & (df.schedule != "linear")].set_index(["run_id", "modality"])
  lin = df[df.eval_schedule == "linear"].set_index(["run_id", "modality"])
  return ((own.elbo - lin.elbo) / np.sqrt(own.se_mc ** 2 + lin.se_mc ** 2)).dropna()


def figures(df, out_dir):
  from analysis import figures as figs   # pylint: disable=import-outside-toplevel
  from matplotlib.figure import Figure   # pylint: disable=import-outside-toplevel
  summary = elbo_summary(df)
  trained = [s for s in SCHEDULES if s in set(df.schedule)]
  sizes = sorted(set(df["size"]), key=lambda s: df[df["size"] == s].params.iloc[0])
  fig = Figure(figsize=(7.0, 2.6), layout="constrained")
  for ax, m in zip(fig.subplots(1, len(MODALITIES)), MODALITIES):
    for j, size in enumerate(sizes):
      part = summary[(summary.modality == m) & (summary["size"] == size)].set_index("schedule").reindex(trained)
      x = np.arange(len(trained)) + (j - (len(sizes) - 1) / 2) * 0.15
      ax.errorbar(x, part.elbo, yerr=part.spread, fmt="o", capsize=3, label=size)
      raw = df[(df.modality == m) & (df["size"] == size) & (df.eval_schedule == "linear")]
      ax.plot(x[[trained.index(s) for s in raw.schedule]], raw.elbo, "k.", ms=3)
    ax.set(xticks=range(len(trained)), xticklabels=trained, title=m, ylabel="val NELBO (nats/token)")
  fig.axes[0].legend(title="model")
  elbo_paths = figs.save(fig, out_dir / "elbo_by_schedule")
  var, _ = variance_summary(df)
  fig = Figure(figsize=(7.0, 2.6), layout="constrained")
  for ax, m in zip(fig.subplots(1, len(MODALITIES)), MODALITIES):
    ax.plot(list(var.columns), var.loc[m].to_numpy(), "o")   # markers, not bars: the axis is logarithmic
    ax.set(yscale="log", title=m, ylabel="single-t variance × tokens")
    ax.tick_params(axis="x", labelrotation=30)
  return elbo_paths, figs.save(fig, out_dir / "estimator_variance")


def report(ctx) -> Report:
  df = table(ctx.sweep_dir(SWEEP))
  rep = Report("Noise schedules per modality", "Does the masking schedule α_t change what a masked-diffusion model "
               "reaches per modality, and how noisy is its ELBO estimator? (linear 1−t, cosine cos(πt/2), "
               "polynomial 1−t²; log-linear evaluated only)")
  if df.empty:
    return rep.add("Results", "No finished, evaluated runs yet: run `mdm-lab lab run` first.")
  df.to_csv(ctx.out / "schedules.csv", index=False)
  summary = elbo_summary(df)
  lines = ["| modality | model | " + " | ".join(dict.fromkeys(summary.schedule)) + " |",
           "|---|---|" + "---|" * summary.schedule.nunique()]
  for (m, size), part in summary.groupby(["modality", "size"], sort=False):
    cells = [f"{r.elbo:.3f} ± {r.spread:.3f} (mc {r.se_mc:.3f})" for r in part.itertuples()]
    lines.append(f"| {m} | {size} | " + " | ".join(cells) + " |")
  verdicts = []
  for (m, size), part in summary.groupby(["modality", "size"], sort=False):
    gap, noise = np.ptp(part.elbo), max(part.spread.max(), part.se_mc.max())
    verdicts.append(f"{m} {size}: {part.loc[part.elbo.idxmin(), 'schedule']} (schedule means span {gap:.3f}; "
                    f"{'within' if gap <= 2 * noise else 'beyond'} twice the larger of seed half-range and se_mc)")
  rep.add("Final validation ELBO", "Each model's NELBO (nats/token) on its validation batches, measured with one "
          f"estimator (linear schedule, {t_samples(ctx)} stratified t per sequence): mean over "
          f"{int(summary.seeds.max())} seed(s) ± half the seed range, and the Monte Carlo standard error.\n\n"
          + "\n".join(lines) + "\n\nLowest per modality and model: " + "; ".join(verdicts) + ".")
  var, ratio = variance_summary(df)
  rows = [f"| {m} | " + " | ".join(f"{var.loc[m, s]:.3g} ({ratio.loc[m, s]:.2f}×)" for s in var.columns) + " |"
          for m in MODALITIES if m in var.index]
  rep.add("ELBO estimator variance", "Variance × tokens of the one-t-per-sequence NELBO estimate (a batch of N "
          "tokens has variance v/N), every model evaluated under every schedule; geometric mean over models and, "
          "in brackets, the ratio to the linear schedule on the same models.\n\n| modality | "
          + " | ".join(var.columns) + " |\n|---|" + "---|" * len(var.columns) + "\n" + "\n".join(rows))
  z = np.abs(invariance(df))
  rep.clean = ok = bool(z.empty or z.max() < 4)
  rep.add("Invariance check", f"Own-schedule minus linear-estimator ELBO of each model over {len(z)} "
          f"(model, modality) pairs: max |z| = {z.max() if len(z) else float('nan'):.2f}, mean |z| = "
          f"{z.mean() if len(z) else float('nan'):.2f} (z in combined Monte Carlo standard errors); "
          + ("consistent with a schedule-invariant ELBO." if ok else "larger than 4: check the estimators."))
  elbo_paths, var_paths = figures(df, ctx.figures)
  rep.figure("ELBO by schedule", elbo_paths, "Linear-estimator NELBO per trained schedule; markers: seed mean, "
             "bars: seed half-range, dots: single seeds.")
  rep.figure("Estimator variance", var_paths, "Single-t variance × tokens per evaluation schedule (log scale).")
  return rep
