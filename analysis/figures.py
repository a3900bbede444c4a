"""Paper figures in one style: Okabe–Ito colour-blind-safe palette, vector PDF/SVG plus PNG.

Every function returns a matplotlib Figure (built without pyplot, so nothing global changes and notebooks can
compose or restyle them); `save` writes it in each format. Figures: isoFLOP profiles with vertices, the
compute-optimal frontier with bootstrap CI bands, loss vs compute, residuals of a fitted surface, bootstrap
histograms, and mixture-law plots.
"""
import contextlib
import functools
import pathlib

import matplotlib as mpl
import numpy as np
from matplotlib.figure import Figure

from analysis import allocation
from mdm_jax import runio

# Okabe & Ito (2008): distinguishable under the common colour-vision deficiencies.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")
STYLE = {"font.size": 8, "axes.titlesize": 9, "axes.labelsize": 8, "legend.fontsize": 7, "xtick.labelsize": 7,
         "ytick.labelsize": 7, "axes.spines.top": False, "axes.spines.right": False, "axes.linewidth": 0.6,
         "lines.linewidth": 1.2, "lines.markersize": 3.5, "axes.prop_cycle": mpl.cycler(color=PALETTE),
         "pdf.fonttype": 42, "ps.fonttype": 42, "svg.fonttype": "none", "savefig.dpi": 200,
         "legend.frameon": False}  # constrained layout already fits the labels: no bbox="tight" second pass
FORMATS = ("pdf", "svg", "png")
SINGLE, DOUBLE = (3.4, 2.6), (7.0, 2.6)  # column widths in inches


@contextlib.contextmanager
def paper_style():
  with mpl.rc_context(STYLE):
    yield


def styled(draw):
  """Run a figure function inside the paper style (rcParams apply when artists are created)."""
  @functools.wraps(draw)
  def wrapper(*args, **kwargs):
    with paper_style():
      return draw(*args, **kwargs)
  return wrapper


def _figure(size=SINGLE, ncols=1):
  fig = Figure(figsize=size, layout="constrained")
  return fig, np.atleast_1d(fig.subplots(1, ncols))


def save(fig: Figure, stem, formats=FORMATS) -> list[pathlib.Path]:
  """Write fig as stem.pdf/.svg/.png (any subset); returns the paths."""
  stem = pathlib.Path(stem)
  stem.parent.mkdir(parents=True, exist_ok=True)
  paths = []
  with paper_style():
    for fmt in formats:
      path = stem.with_suffix(f".{fmt}")
      with runio.atomic_path(path) as tmp:   # a crash never leaves half a figure
        fig.savefig(tmp, format=fmt)
      paths.append(path)
  return paths


def _colours(n):
  cmap = mpl.colormaps["viridis"]
  return [cmap(x) for x in np.linspace(0.05, 0.9, max(n, 1))]


@styled
def isoflop_profiles(fit, table) -> Figure:
  """Loss vs N (or D) per budget with the fitted profile and its vertex; dropped budgets hollow."""
  from analysis.isoflop import bucket_budgets
  est = fit.estimator
  axis = est["axis"]
  fig, (ax,) = _figure()
  buckets = bucket_budgets(table.column("flops"), est["budget_precision"])
  x_all, loss = table.column(axis), table.column("loss")
  vertices = {v["budget_label"]: v for v in fit.points}
  labels = np.unique(buckets)
  for colour, label in zip(_colours(labels.size), labels):
    rows = buckets == label
    used = label in vertices
    ax.scatter(x_all[rows], loss[rows], s=9, edgecolors=colour, facecolors=colour if used else "none",
               linewidths=0.6)
    if used and est["vertex"] == "parabola":
      xs = np.log(x_all[rows])
      c2, c1, c0 = np.polyfit(xs, loss[rows], 2)
      grid = np.linspace(xs.min(), xs.max(), 100)
      ax.plot(np.exp(grid), np.polyval([c2, c1, c0], grid), color=colour, lw=0.8)
    if used:
      v = vertices[label]
      ax.plot(np.exp(v["x_vertex"]), v["loss_vertex"], marker="*", ms=7, color=colour, mec="black", mew=0.4)
  ax.set_xscale("log")
  ax.set_xlabel("parameters N" if axis == "params" else "tokens D")
  ax.set_ylabel("loss")
  ax.set_title(f"isoFLOP profiles\n({est['profile']}; hollow: dropped)")   # two lines: fits a column-width figure
  return fig


def _frontier_band(boot, fit, grid, key):
  s = boot.samples
  if "alpha" in s:  # parametric: push every replicate through the allocation on the dense grid
    from analysis.resampling import _frontier
    values = _frontier(s, grid)[key]
  else:
    k = s["k_params"] if key == "params_opt" else s["k_tokens"]
    e = s["a"] if key == "params_opt" else s["b"]
    values = k[:, None] * grid[None, :] ** e[:, None]
  level = boot.summary["level"]
  return np.nanpercentile(values, [50 * (1 - level), 50 * (1 + level)], axis=0)


@styled
def frontier(fit, boot=None, flops=None, table=None) -> Figure:
  """N*(C) and D*(C) of a fit, with the bootstrap percentile band when given, and the per-budget points."""
  if flops is None:
    top = float(np.max(table.column("flops"))) if table is not None else 1e22
    flops = np.geomspace(top / 1e4, top * 1e3, 60)
  flops = np.asarray(flops, np.float64)
  if hasattr(fit, "params"):
    alloc = allocation.allocate(fit.params, flops)
    curves = {"params_opt": alloc["params"], "tokens_opt": alloc["tokens"]}
  else:
    alloc = fit.allocate(flops)
    curves = {"params_opt": alloc["params"], "tokens_opt": alloc["tokens"]}
  fig, axes = _figure(DOUBLE, 2)
  for ax, key, label, colour in zip(axes, ("params_opt", "tokens_opt"), ("N*", "D*"), PALETTE):
    ax.plot(flops, curves[key], color=colour, label=f"{fit.method}")
    if boot is not None:
      lo, hi = _frontier_band(boot, fit, flops, key)
      ax.fill_between(flops, lo, hi, color=colour, alpha=0.25, lw=0,
                      label=f"{int(100 * boot.summary['level'])}% bootstrap CI")
    for p in getattr(fit, "points", []) or []:
      ax.plot(p["budget"] if "budget" in p else p["flops"], p[key], "o", color="black", ms=2.5)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training FLOPs C")
    ax.set_ylabel(label)
    ax.legend()
  exps = f"a = {fit.a:.4f}, b = {fit.b:.4f}"
  fig.suptitle(f"compute-optimal frontier ({exps})", fontsize=9)
  return fig


@styled
def loss_vs_compute(table, fit=None) -> Figure:
  """Every run's loss against its compute, coloured by size, with L*(C) of a parametric fit."""
  fig, (ax,) = _figure()
  n = table.column("params")
  sc = ax.scatter(table.column("flops"), table.column("loss"), c=np.log10(n), s=6, cmap="viridis")
  fig.colorbar(sc, ax=ax, label="log10 N")
  if fit is not None and hasattr(fit, "params"):
    c = np.geomspace(table.column("flops").min(), table.column("flops").max(), 100)
    ax.plot(c, allocation.allocate(fit.params, c)["loss"], color=PALETTE[1], label="L*(C)")
    ax.legend()
  ax.set_xscale("log")
  ax.set_xlabel("training FLOPs C")
  ax.set_ylabel("loss")
  return fig


@styled
def residuals(fit, table) -> Figure:
  """Log residuals of a fitted surface against N and against D (structure here means a misspecified form)."""
  r = np.log(table.column("loss")) - np.log(fit.predict(table.column("params"), table.column("tokens")))
  fig, axes = _figure(DOUBLE, 2)
  for ax, col, label in zip(axes, ("params", "tokens"), ("N", "D")):
    ax.scatter(table.column(col), r, s=5, color=PALETTE[0])
    ax.axhline(0.0, color="black", lw=0.6)
    ax.set_xscale("log")
    ax.set_xlabel(label)
    ax.set_ylabel("log L − log L̂")
  fig.suptitle(f"{fit.method} residuals (rmse {np.sqrt(np.mean(r**2)):.3g})", fontsize=9)
  return fig


@styled
def bootstrap_histograms(boot, fit=None, names=None) -> Figure:
  """Histograms of the bootstrap replicates with the percentile CI and the full-sample value."""
  s = boot.samples
  names = names or [k for k in ("alpha", "beta", "E", "a", "k_params") if k in s and np.ndim(s[k]) == 1]
  fig, axes = _figure((1.8 * len(names), 2.0), len(names))
  for ax, name, colour in zip(axes, names, PALETTE):
    values = np.asarray(s[name])
    values = values[np.isfinite(values)]
    ax.hist(values, bins=40, color=colour, alpha=0.8)
    lo, hi = boot.summary["quantities"][name]["ci"]
    for v in (lo, hi):
      ax.axvline(v, color="black", lw=0.6, ls="--")
    if fit is not None and hasattr(fit, name):
      ax.axvline(getattr(fit, name), color="black", lw=1.0)
    ax.set_xlabel(name)
  axes[0].set_ylabel("replicates")
  return fig


@styled
def mixture_plot(law, table, drift=None) -> Figure:
  """Observed vs predicted loss of a mixture law, and (optionally) the optimal mix against compute."""
  from analysis.mixture import mixture_matrix
  _, h = mixture_matrix(table)
  pred = law.predict(table.column("params"), table.column("tokens"), h)
  fig, axes = _figure(DOUBLE if drift else SINGLE, 2 if drift else 1)
  ax = axes[0]
  ax.scatter(table.column("loss"), pred, s=6, c=h[:, 0], cmap="viridis")
  lim = [min(pred.min(), table.column("loss").min()), max(pred.max(), table.column("loss").max())]
  ax.plot(lim, lim, color="black", lw=0.6)
  ax.set_xlabel("observed loss")
  ax.set_ylabel(f"{law.form} law prediction")
  if drift:
    c = [d["flops"] for d in drift]
    for domain, colour in zip(law.domains, PALETTE):
      axes[1].plot(c, [d["mixture"][domain] for d in drift], marker="o", color=colour, label=domain)
    axes[1].set_xscale("log")
    axes[1].set_xlabel("training FLOPs C")
    axes[1].set_ylabel("optimal weight h*")
    axes[1].legend()
  return fig
