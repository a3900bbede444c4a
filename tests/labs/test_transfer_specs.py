"""The LR-transfer sweep specs load with the sweep planner and vary exactly width (or depth) × parametrisation × LR."""
import pathlib

import pytest

from mdm_jax import parametrization
from sweeps.spec import load_spec

SPECS = pathlib.Path(__file__).parents[2] / "labs" / "transfer"


@pytest.mark.parametrize("name, axis, values", [("lr_width.yaml", "d_model", {64, 128, 256, 512}),
                                                ("lr_depth.yaml", "n_layers", {2, 4, 8, 16})])
def test_transfer_spec_sweeps_lr_per_size_and_parametrization(name, axis, values):
  spec = load_spec(SPECS / name)
  cfgs = [spec.resolve(p) for p in spec.points()]
  assert {getattr(c.model, axis) for c in cfgs} == values
  settings = {(c.param.parametrization, c.param.alpha) for c in cfgs}
  assert ("sp", 1.0) in settings and any(p == "completep" for p, _ in settings)
  by_setting: dict = {}
  for c in cfgs:
    by_setting.setdefault((c.param.parametrization, c.param.alpha, getattr(c.model, axis)), set()).add(c.optim.lr)
  assert {len(v) for v in by_setting.values()} == {6}
  assert len({c.train.steps * c.tokens_per_step for c in cfgs}) == 1   # one token budget
  base = [c for c in cfgs if c.param.parametrization == "completep" and c.model.d_model == c.param.base_width
          and c.model.n_layers == c.param.base_depth]
  assert base and all(parametrization.scales(c) == (1.0, 1.0) for c in base)
