"""The mixing lab's simplex figure: each run's loss at its mixture, per modality and scale, in barycentric axes."""
import numpy as np
from matplotlib.figure import Figure

from analysis import figures

CORNERS = {"text": (0.0, 0.0), "image": (1.0, 0.0), "audio": (0.5, np.sqrt(3) / 2)}


def barycentric(h_nx3) -> tuple[np.ndarray, np.ndarray]:
  """(x, y) of (text, image, audio) shares in a triangle with text bottom-left, image bottom-right, audio on top."""
  h = np.asarray(h_nx3, np.float64)
  corners = np.array(list(CORNERS.values()))
  xy = h @ corners
  return xy[:, 0], xy[:, 1]


@figures.styled
def simplex_losses(data: dict, points: list[dict], optima: list[dict] | None = None) -> Figure:
  """Rows: scales (N ascending); columns: each target's loss coloured at its mixture; star: the law's optimum."""
  targets = list(data)
  fig = Figure(figsize=(1.8 * len(targets), 1.7 * len(points)), layout="constrained")
  axes = np.atleast_2d(fig.subplots(len(points), len(targets)))
  outline = np.array([*CORNERS.values(), CORNERS["text"]])
  for i, p in enumerate(points):
    for ax, target in zip(axes[i], targets):
      df = data[target].df[data[target].df["params"] == p["params"]]
      x, y = barycentric(df[[f"mix_{m}" for m in CORNERS]].to_numpy())
      sc = ax.scatter(x, y, c=df["loss"], s=28, cmap="viridis_r")
      fig.colorbar(sc, ax=ax, shrink=0.8)
      ax.plot(outline[:, 0], outline[:, 1], color="black", lw=0.5)
      if optima is not None:
        ox, oy = barycentric([[optima[i]["mixture"][m] for m in CORNERS]])
        ax.plot(ox, oy, marker="*", ms=8, color=figures.PALETTE[1], mec="black", mew=0.4)
      for name, (cx, cy) in CORNERS.items():
        ax.annotate(name, (cx, cy), fontsize=6, ha="center", va="top" if cy == 0 else "bottom")
      ax.set_axis_off()
      ax.set_title(f"{target}, N = {p['params']:.3g}", fontsize=7)
  return fig
