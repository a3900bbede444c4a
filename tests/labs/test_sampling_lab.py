"""The sampling lab: one planned model on the prepared data, a sampler grid within the samplers' rules, and the
PNG grid it tiles samples into (checked pixel by pixel against numpy)."""
import math
import pathlib

import numpy as np
import pytest
from PIL import Image

from labs import common, trimodal
from mdm_jax.sampling import defaults
from sweeps.plan import make_plan

LAB = pathlib.Path(__file__).parents[2] / "labs" / "sampling"
MANIFEST = {"seq_len": 256, "vocab": {"text_size": 1024, "image_size": 256, "audio_size": 512}}


@pytest.fixture(scope="module")
def lab():
  return common.load_lab(LAB)


@pytest.mark.parametrize("scale, steps", [("default", 300), ("ci", 30)])
def test_spec_plans_one_small_model_on_the_prepared_data(lab, tmp_path, scale, steps):
  plan = make_plan(lab.spec(common.LabContext(LAB, tmp_path, scale=scale),
                            trimodal.run_fields("/data/tiny", MANIFEST)))
  assert len(plan.runs) == 1
  cfg = plan.runs[0].cfg
  assert (cfg.model.d_model, cfg.model.n_layers, cfg.train.steps, cfg.train.checkpoint_every) == (64, 2, steps, steps)
  assert cfg.data.source == "/data/tiny" and all(w > 0 for w in cfg.data.mixture)


@pytest.mark.parametrize("modality, slots", [("text", 128), ("image", 49), ("audio", 150), ("audio", 7)])
def test_grid_spans_every_sampler_within_one_call_per_slot(lab, modality, slots):
  specs = lab.grid(modality, slots, quick=False)
  assert {s.sampler for s in specs} == {"random", "topk", "threshold"}
  assert len(set(specs)) == len(specs) and max(s.steps for s in specs) <= slots
  assert {s.temperature for s in specs} == {0.0, 0.7, 1.0}
  assert {s.threshold for s in specs if s.sampler == "threshold"} == {0.7, 0.9}
  assert sum(s.steps for s in specs) <= 6 * slots   # the lab's budget: about 5.4 model calls per slot
  blocks = {s.block_length for s in specs}
  assert blocks == ({0, 32} if modality == "text" else {0})
  for s in specs:   # every block gets at least one step
    assert s.steps >= (math.ceil(slots / s.block_length) if s.block_length else 1)
  assert lab.grid(modality, slots, quick=True) == defaults.grid(modality, slots, quick=True)


def test_image_grid_tiles_in_reading_order(lab, tmp_path):
  rng = np.random.default_rng(0)
  tiles = [rng.integers(0, 256, (4, 6), dtype=np.uint8) for _ in range(7)]
  paths = []
  for i, t in enumerate(tiles):
    paths.append(tmp_path / f"image_{i:03d}.png")
    Image.fromarray(t, "L").save(paths[-1])
  lab.image_grid(paths, tmp_path / "grid.png", columns=3, scale=2)
  sheet = np.asarray(Image.open(tmp_path / "grid.png"))
  want = np.zeros((3 * 8, 3 * 12), np.uint8)
  for i, t in enumerate(tiles):
    r, c = divmod(i, 3)
    want[r * 8:(r + 1) * 8, c * 12:(c + 1) * 12] = np.kron(t, np.ones((2, 2), np.uint8))
  np.testing.assert_array_equal(sheet, want)
