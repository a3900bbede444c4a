"""The mixing lab: its specs plan a simplex grid (weights summing to 1, vertices included) at two scales, each
scale one vmap group, and its tables, law fits and optimum agree with a known mixture law on synthetic runs."""
import itertools
import pathlib

import numpy as np
import pytest

from labs import common, trimodal
from sweeps.plan import make_plan
from tests.labs.synthetic_runs import SyntheticContext

LAB = pathlib.Path(__file__).parents[2] / "labs" / "mixing"
MANIFEST = {"seq_len": 256, "vocab": {"text_size": 1024, "image_size": 256, "audio_size": 512}}
FIELDS = trimodal.run_fields("/data/tiny", MANIFEST)
# Additive law L = E + A/N^a + B/D^b + 1/sum_j C_j h_j^g_j, the same for every modality here, so the mean obeys it.
LAW = {"E": 1.0, "A": 50.0, "alpha": 0.3, "B": 80.0, "beta": 0.3, "C": (1.0, 0.5, 0.25), "gamma": (0.5, 0.6, 0.7)}


def law(n, d, h):
  h = np.asarray(h, np.float64)
  mix = sum(c * w ** g for c, w, g in zip(LAW["C"], h.T, LAW["gamma"]))
  return LAW["E"] + LAW["A"] * n ** -LAW["alpha"] + LAW["B"] * d ** -LAW["beta"] + 1.0 / mix


def losses(cfg, n, d):
  loss = float(law(n, d, [cfg.data.mixture])[0])
  return {m: loss + 0.1 * i for i, m in enumerate(("text", "image", "audio"))}   # offsets shift, not move, the optimum


@pytest.fixture(scope="module")
def lab():
  return common.load_lab(LAB)


@pytest.mark.parametrize("scale, step, sizes", [("default", 3, (32, 64)), ("ci", 2, (32, 48))])
def test_spec_plans_a_simplex_grid_at_two_scales(lab, tmp_path, scale, step, sizes):
  plan = make_plan(lab.spec(common.LabContext(LAB, tmp_path, scale=scale), FIELDS))
  points = (step + 1) * (step + 2) // 2
  assert len(plan.runs) == 2 * points == len({r.run_id for r in plan.runs})
  want = {(i / step, j / step, (step - i - j) / step) for i in range(step + 1) for j in range(step + 1 - i)}
  assert {tuple(np.eye(3)[k]) for k in range(3)} <= want   # the vertices (single-modality runs) are in the grid
  for size in sizes:
    runs = [r for r in plan.runs if r.cfg.model.d_model == size]
    mixtures = {r.cfg.data.mixture for r in runs}
    assert len(mixtures) == points and all(abs(sum(m) - 1) < 1e-9 for m in mixtures)
    assert {tuple(round(w, 9) for w in m) for m in mixtures} == {tuple(round(w, 9) for w in m) for m in want}
    assert len({r.group for r in runs}) == 1   # one vmapped program per scale
    assert all(r.cfg.data.source == "/data/tiny" for r in runs)


def test_tables_and_law_recover_a_known_mixture_optimum(lab, tmp_path):
  ctx = SyntheticContext(LAB, tmp_path, losses=losses)   # the default grid: 10 mixtures identify C_j, gamma_j
  lab.run_grid(ctx, FIELDS)
  data = lab.tables(ctx.sweep_dir(lab.SWEEP))
  per = {m: data[m].df.set_index("run_id")["loss"] for m in ("text", "image", "audio")}
  mean = data[lab.MEAN].df.set_index("run_id")["loss"]
  assert len(mean) == 20
  np.testing.assert_allclose(mean, (per["text"] + per["image"] + per["audio"]).loc[mean.index] / 3, rtol=1e-12)
  points = lab.scales(data[lab.MEAN])
  assert [p["params"] for p in points] == sorted(p["params"] for p in points) and len(points) == 2
  fitted = lab.fit_laws({lab.MEAN: data[lab.MEAN]})[lab.MEAN]["additive"]
  assert fitted.diagnostics["residuals"]["max_abs"] < 1e-3
  for p, opt in zip(points, lab.optima(fitted, points)):
    grid = np.array([(i, j, 400 - i - j) for i, j in itertools.product(range(401), repeat=2) if i + j <= 400]) / 400
    true = law(p["params"], p["tokens"], grid) + 0.1
    best = grid[np.argmin(true)]
    np.testing.assert_allclose([opt["mixture"][m] for m in ("text", "image", "audio")], best, atol=0.02)
    assert opt["loss"] == pytest.approx(true.min(), rel=1e-3)


def test_report_writes_the_law_sections_and_figures_at_ci_scale(lab, tmp_path):
  ctx = SyntheticContext(LAB, tmp_path, losses=losses, scale="ci")
  lab.run_grid(ctx, FIELDS)
  rep = lab.report(ctx)
  assert [h for h, _ in rep.sections if h.startswith("Additive law")] == [
      f"Additive law: {m}" for m in ("text", "image", "audio", lab.MEAN)]
  assert rep.write(ctx).is_file() and (ctx.figures / "mixture_law.png").is_file()
  assert (ctx.figures / "simplex_losses.png").is_file()
