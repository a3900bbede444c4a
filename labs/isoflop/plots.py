"""The isoflop lab's figures: per-modality isoFLOP profiles with the fitted law, the frontiers N*(C) with bootstrap
bands, and the pre-registered prediction against the largest budget's runs."""
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from analysis import figures
from analysis.objective import loss_surface


def _panels(n: int, height: float = 2.4) -> tuple[Figure, list]:
  fig = Figure(figsize=(1.9 * n, height), layout="constrained")
  return fig, list(np.atleast_1d(fig.subplots(1, n, sharey=False)))


def _law_along_budget(params: dict, table, budget: float, n_grid):
  """L̂ along one budget: D = C / (FLOPs per token), interpolated in log N from that budget's runs."""
  df = table.df[np.abs(np.log(table.df["flops"] / budget)) < 0.05].sort_values("params")
  per_token = np.interp(np.log(n_grid), np.log(df["params"]), np.log(df["flops"] / df["tokens"]))
  return loss_surface(params, n_grid, budget / np.exp(per_token))


def _label_params(ax):
  """Compact N labels (100k, 200k, 500k, 1M) on major and minor ticks: profiles span less than a decade."""
  def label(v, _):
    mantissa = v / 10 ** np.floor(np.log10(v))
    return (f"{v / 1e6:g}M" if v >= 1e6 else f"{v / 1e3:g}k") if round(mantissa, 6) in (1, 2, 5) else ""
  ax.xaxis.set_major_formatter(FuncFormatter(label))
  ax.xaxis.set_minor_formatter(FuncFormatter(label))


@figures.styled
def profiles(data: dict, fits: dict, budgets) -> Figure:
  """Loss vs total parameters, one colour per budget, with the Approach 3 fit (all budgets) along each budget."""
  fig, axes = _panels(len(data))
  colours = figures._colours(len(budgets))   # pylint: disable=protected-access
  for ax, (m, table) in zip(axes, data.items()):
    for c, colour in zip(budgets, colours):
      rows = table.df[np.abs(np.log(table.df["flops"] / c)) < 0.05]
      if rows.empty:
        continue
      ax.scatter(rows["params"], rows["loss"], s=9, color=colour, label=f"{c:.2g}")
      grid = np.geomspace(rows["params"].min(), rows["params"].max(), 60)
      ax.plot(grid, _law_along_budget(fits[m].params, table, c, grid), color=colour, lw=0.8)
    ax.set_xscale("log")
    _label_params(ax)
    ax.set_title(m)
    ax.set_xlabel("parameters N (total)")
  axes[0].set_ylabel("validation loss (nats/token)")
  axes[0].legend(title="C (FLOPs)", fontsize=6)
  return fig


@figures.styled
def frontiers(boots: dict, budgets) -> Figure:
  """N*(C) and D*(C) per modality from Approach 3, with the 95% bootstrap percentile band."""
  fig = Figure(figsize=figures.DOUBLE, layout="constrained")
  axes = fig.subplots(1, 2)
  c = np.geomspace(budgets[0] / 3, budgets[-1] * 10, 60)
  for (m, boot), colour in zip(boots.items(), figures.PALETTE):
    s = boot.samples
    for ax, key in zip(axes, ("params", "tokens")):
      sign = 1.0 if key == "params" else -1.0
      exp = s["a"] if key == "params" else s["b"]
      curves = s["G"][:, None] ** sign * (c[None] / 6.0) ** exp[:, None]
      lo, mid, hi = np.nanpercentile(curves, [2.5, 50, 97.5], axis=0)
      ax.plot(c, mid, color=colour, label=f"{m} ({'a' if key == 'params' else 'b'}={np.nanmedian(exp):.2f})")
      ax.fill_between(c, lo, hi, color=colour, alpha=0.2, lw=0)
  for ax, label in zip(axes, ("N* (total params)", "D* (tokens)")):
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training FLOPs C")
    ax.set_ylabel(label)
    ax.legend(fontsize=6)
  return fig


@figures.styled
def prediction(data: dict, pred: dict, curves: dict) -> Figure:
  """The largest budget: its runs (observed), the law fitted before they ran (dashed) and its predicted optimum."""
  budget = pred["budget"]
  fig, axes = _panels(len(pred["modalities"]))
  for ax, m in zip(axes, data):
    p = pred["modalities"][m]
    table = data[m]
    rows = table.df[np.abs(np.log(table.df["flops"] / budget)) < 0.05]
    if not rows.empty:
      ax.scatter(rows["params"], rows["loss"], s=12, color=figures.PALETTE[0], label="observed")
      lo, hi = rows["params"].min() / 2, rows["params"].max() * 2
      curve = [q for q in curves[m] if lo <= q["params"] <= hi]
      ax.plot([q["params"] for q in curve], [q["loss"] for q in curve], "--", color=figures.PALETTE[1],
              label="pre-registered law")
    opt = p["optimum"]
    ax.plot(opt["params"], opt["loss"], marker="*", ms=8, color=figures.PALETTE[1], mec="black", mew=0.4,
            ls="none", label="predicted L*")
    ax.set_xscale("log")
    _label_params(ax)
    ax.set_title(m)
    ax.set_xlabel("parameters N (total)")
  axes[0].set_ylabel(f"validation loss at C = {budget:.2g}")
  axes[0].legend(fontsize=6)
  return fig


def save_all(ctx, data, fits, boots, budgets, pred=None, curves=None) -> list:
  """Saves every figure; returns (heading, paths, caption) for the report."""
  out = [("isoFLOP profiles per modality", figures.save(profiles(data, fits, budgets), ctx.figures / "isoflop_profiles"),
          "Final validation loss of every run against its total parameter count, one colour per budget; lines: "
          "the Approach 3 law fitted on all budgets, along each budget."),
         ("Compute-optimal frontiers", figures.save(frontiers(boots, budgets), ctx.figures / "frontiers"),
          "N*(C) and D*(C) per modality (Approach 3, C = 6ND closed form) with 95% bootstrap bands.")]
  if pred is not None:
    out.append(("Prediction vs observed", figures.save(prediction(data, pred, curves), ctx.figures / "prediction"),
                "The largest budget: the law fitted before it ran (dashed), its predicted optimum (star), and the "
                "runs made afterwards (dots)."))
  return out
