"""Per-modality compute-optimal scaling on tri-modal data, with a pre-registered extrapolation to the largest budget.

Question: how do the compute-optimal model size and loss of each modality (text, image-text, audio-text) scale with
training compute, and does a law fitted on the smaller budgets predict the optimum at the largest one?

Recipe: every size of the spec's grid is trained at every budget on the `tiny` prepared data. `run` first trains all
budgets but the largest, fits Approach 3 per modality on those runs, and writes prediction.json (the predicted
optimal loss of each modality at the largest budget) before any run of that budget exists; a prediction already on
disk is never rewritten. Then it trains the largest budget. `report` fits every budget per modality (Approach 3 with
bootstrap CIs; Approach 2 where the profiles have interior minima) and scores the prediction.
"""
import json
import pathlib

import numpy as np

from labs import trimodal
from labs.isoflop import plots
from labs.report import Report
from mdm_jax import runio
from mdm_jax.errors import UserError

SPEC, SWEEP, PREDICTION = "isoflop.yaml", "isoflop", "prediction.json"
CI_GRID = {"size": [32, 48, 64], "flops": [1.0e11, 2.0e11, 4.0e11], "seed": [0]}   # ~2-3 min on 2 cores
N_BOOTSTRAP = {"default": 2000, "ci": 200}
MODALITIES = ("text", "image", "audio")
ALL = "all"   # the token-weighted validation loss over the three modalities (eval/loss)
LAW_KEYS = ("E", "A", "B", "alpha", "beta")


def grid(ctx) -> dict:
  g = CI_GRID if ctx.scale == "ci" else ctx.spec(SPEC).data["grid"]
  if sorted(g["flops"]) != list(g["flops"]) or len(g["flops"]) < 3:
    raise UserError(f"{SPEC}: grid.flops", "needs >= 3 ascending budgets", "the last one is the extrapolation")
  return g


def spec(ctx, budgets, data_fields: dict | None = None):
  """The lab's spec restricted to BUDGETS, pointed at the prepared data when DATA_FIELDS are given."""
  base = ctx.spec(SPEC)
  return ctx.spec(SPEC, set={**base.data["set"], **(data_fields or {})}, grid={**grid(ctx), "flops": list(budgets)})


def run(ctx) -> None:
  data_dir, manifest = trimodal.prepared("tiny")
  train(ctx, trimodal.run_fields(data_dir, manifest))


def train(ctx, fields: dict) -> None:
  """Smaller budgets, then the prediction (kept if already written), then the largest budget."""
  budgets = grid(ctx)["flops"]
  ctx.sweep(SWEEP, spec(ctx, budgets[:-1], fields))
  preregister(ctx, spec(ctx, budgets[-1:], fields), budgets[-1])
  ctx.sweep(SWEEP, spec(ctx, budgets, fields))


def tables(sweep_dir, max_flops: float | None = None) -> dict:
  """{modality: RunTable} of final validation losses (modalities from eval/loss/<m>, plus `all`)."""
  from analysis import load_runs   # pylint: disable=import-outside-toplevel
  per = load_runs(sweep_dir, modalities=True)
  out = {str(m): per.replace(rows.drop(columns="modality")) for m, rows in per.df.groupby("modality")}
  out = {m: out[m] for m in MODALITIES if m in out} | {ALL: load_runs(sweep_dir)}
  if max_flops is not None:
    out = {m: t.replace(t.df[t.column("flops") < max_flops]) for m, t in out.items()}
  return out


def predicted_profile(law: dict, held_spec, budget: float) -> list[dict]:
  """L̂ along BUDGET over the size family (widths 16..256), under the trainer's FLOP accounting (not 6ND):
  N = total parameters of each width, D = C / (train FLOPs per token)."""
  from analysis.objective import loss_surface   # pylint: disable=import-outside-toplevel
  from mdm_jax import flops   # pylint: disable=import-outside-toplevel
  out = []
  for width in range(16, 257, 4):
    cfg = held_spec.base.replace(**{f"model.{k}": v for k, v in held_spec.family.model_fields(width).items()})
    n = flops.param_counts(cfg.model, cfg.vocab_size)["total"]
    d = budget / flops.train_flops_per_token(cfg)
    out.append({"width": width, "params": float(n), "tokens": float(d),
                "loss": float(loss_surface(law, np.array([n]), np.array([d]))[0])})
  return out


def preregister(ctx, held_spec, budget: float) -> dict:
  """Writes OUT/prediction.json from the runs below BUDGET, unless it exists; refuses once BUDGET has runs."""
  from analysis import fit_approach3, predict_optimum   # pylint: disable=import-outside-toplevel
  from sweeps.plan import make_plan   # pylint: disable=import-outside-toplevel
  path = ctx.out / PREDICTION
  if path.is_file():
    return runio.read_json(path)
  sweep_dir = ctx.sweep_dir(SWEEP)
  planned = make_plan(held_spec).runs
  if any((sweep_dir / "runs" / r.run_id).exists() for r in planned):
    raise UserError(str(path), "missing, but runs of the largest budget already started: the prediction would not "
                    "be pre-registered", f"use a new --out, or delete {sweep_dir}'s runs of budget {budget:.3g}")
  record = {"budget": budget, "method": "approach3", "written_before_runs": [r.run_id for r in planned],
            "modalities": {}}
  for modality, table in tables(sweep_dir, max_flops=budget * 0.9).items():
    fit = fit_approach3(table)
    per_run = fit.predict(*planned_params_tokens(planned))
    record["modalities"][modality] = {
        "fit": {k: getattr(fit, k) for k in ("E", "A", "B", "alpha", "beta", "a", "b")},
        "n_fit": len(table), "warnings": fit.diagnostics.get("warnings", []),
        "optimum": min(predicted_profile(fit.params, held_spec, budget), key=lambda p: p["loss"]),
        "optimum_6nd": {k: float(v) for k, v in predict_optimum(fit, budget).items() if np.ndim(v) == 0},
        "runs": {r.run_id: float(p) for r, p in zip(planned, per_run)}}
  runio.write_json_atomic(path, record)
  return record


def planned_params_tokens(planned) -> tuple[np.ndarray, np.ndarray]:
  """N (total) and D of planned runs, known before they run."""
  from mdm_jax import flops   # pylint: disable=import-outside-toplevel
  n = [flops.param_counts(r.cfg.model, r.cfg.vocab_size)["total"] for r in planned]
  return np.array(n, np.float64), np.array([r.cfg.total_steps * r.cfg.tokens_per_step for r in planned], np.float64)


def observed_optimum(table, budget: float) -> dict:
  """The largest budget's optimum: its isoFLOP parabola vertex in log N if interior, else its best run."""
  from analysis.isoflop import profile_vertex   # pylint: disable=import-outside-toplevel
  rows = table.df[np.abs(np.log(table.df["flops"] / budget)) < 0.05]
  v = profile_vertex(np.log(rows["params"].to_numpy()), rows["loss"].to_numpy(), "parabola")
  if v["edge"] is None:
    return {"loss": v["loss_vertex"], "params": float(np.exp(v["x_vertex"])), "how": "parabola vertex"}
  best = rows.loc[rows["loss"].idxmin()]
  return {"loss": float(best["loss"]), "params": float(best["params"]), "how": f"best run ({v['edge']})"}


def report(ctx) -> Report:
  from analysis import bootstrap, fit_approach3, fit_isoflop   # pylint: disable=import-outside-toplevel
  budgets = grid(ctx)["flops"]
  data = tables(ctx.sweep_dir(SWEEP))
  rep = Report("isoFLOP lab: per-modality compute-optimal scaling",
               "Question: how do the compute-optimal size N*(C) and loss L*(C) of each modality scale with compute, "
               f"and does a law fitted below {budgets[-1]:.3g} FLOPs predict that budget's optimum?")
  fits, boots, iso, rows = {}, {}, {}, []
  for m, table in data.items():
    fits[m] = fit_approach3(table)
    boots[m] = bootstrap(fits[m], table, N_BOOTSTRAP[ctx.scale], seed=0)
    q = boots[m].summary["quantities"]
    try:
      iso[m] = fit_isoflop(table)
    except UserError as e:
      iso[m] = e
    a2 = f"{iso[m].a:.3f}" if not isinstance(iso[m], Exception) else "— (too few interior minima)"
    rows.append(f"| {m} | {len(table)} | {_ci(fits[m].alpha, q['alpha'])} | {_ci(fits[m].beta, q['beta'])} | "
                f"{_ci(fits[m].a, q['a'])} | {_ci(fits[m].b, q['b'])} | {fits[m].E:.3f} | {a2} |")
    warnings = fits[m].diagnostics.get("warnings", [])
    if warnings:
      rep.clean = False
      rep.add(f"Fit diagnostics: {m}", "\n".join(f"- {w}" for w in warnings))
  rep.add("Exponents per modality (Approach 3, all budgets)",
          "L(N, D) = E + A/N^α + B/D^β with N = total parameters; N* ∝ C^a, D* ∝ C^b; "
          f"95% percentile CIs from {N_BOOTSTRAP[ctx.scale]} bootstrap resamples of the runs.\n\n"
          "| modality | runs | α | β | a | b | E | a (Approach 2) |\n|---|---|---|---|---|---|---|---|\n" + "\n".join(rows))
  rep.add("Pre-registered extrapolation", _prediction_section(ctx, data, budgets[-1]))
  pred = runio.read_json(ctx.out / PREDICTION) if (ctx.out / PREDICTION).is_file() else None
  curves = pred and {m: predicted_profile({k: p["fit"][k] for k in LAW_KEYS}, spec(ctx, budgets[-1:]), budgets[-1])
                     for m, p in pred["modalities"].items()}
  paths = plots.save_all(ctx, data, fits, boots, budgets, pred, curves)
  for heading, stems, caption in paths:
    rep.figure(heading, stems, caption)
  return rep


def _prediction_section(ctx, data, budget) -> str:
  path = ctx.out / PREDICTION
  if not path.is_file():
    return "No prediction.json: `lab run` writes it before the largest budget runs."
  pred = runio.read_json(path)
  lines = [f"Written to `{PREDICTION}` before any run of C = {pred['budget']:.3g} FLOPs existed, from an Approach 3 "
           "fit of the smaller budgets; L̂* minimises the fitted law over the size family under the trainer's FLOP "
           "accounting. Observed L* is the largest budget's isoFLOP parabola vertex (or its best run when the "
           "vertex is not interior).", "",
           "| modality | predicted L* | (6ND closed form) | observed L* | how | relative error |", "|---|---|---|---|---|---|"]
  for m in data:
    p = pred["modalities"][m]
    if not (np.abs(np.log(data[m].column("flops") / budget)) < 0.05).any():
      lines.append(f"| {m} | {p['optimum']['loss']:.4f} | {p['optimum_6nd']['loss']:.4f} | not run yet | | |")
      continue
    obs = observed_optimum(data[m], budget)
    rel = (p["optimum"]["loss"] - obs["loss"]) / obs["loss"]
    lines.append(f"| {m} | {p['optimum']['loss']:.4f} | {p['optimum_6nd']['loss']:.4f} | {obs['loss']:.4f} | "
                 f"{obs['how']} | {rel:+.2%} |")
  return "\n".join(lines)


def _ci(value, q) -> str:
  lo, hi = q.get("ci", [np.nan, np.nan])
  return f"{value:.3f} [{lo:.3f}, {hi:.3f}]"
