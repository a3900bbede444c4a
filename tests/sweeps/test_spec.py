"""Sweep specs: grid counts, stable ids, first-class axes, the isoFLOP design, and bad specs."""
import json
import math
import os
import subprocess
import sys

import pytest

from labs.cli import main as lab_main
from mdm_jax import flops
from mdm_jax.errors import UserError
from sweeps.plan import make_plan
from sweeps.spec import load_spec
from tests.sweeps.conftest import write_spec

GRID3 = {"product": [{"size": ["xxs", "xs", "s"]}, {"lr": [1e-3, 3e-3]}, {"seed": [0, 1, 2, 3]}]}


def test_three_axis_grid_has_the_right_count_and_unique_ids(tmp_path):
  plan = make_plan(load_spec(write_spec(tmp_path, GRID3)))
  assert len(plan.runs) == 3 * 2 * 4 and len({r.run_id for r in plan.runs}) == 24
  assert {r.cfg.model.d_model for r in plan.runs} == {32, 64, 128}
  assert {(r.cfg.optim.lr, r.cfg.train.seed) for r in plan.runs} == {(lr, s) for lr in (1e-3, 3e-3)
                                                                      for s in range(4)}
  assert plan.counts()["shapes"] == 3 and plan.counts()["groups"] == 3   # lr and seed vary inside a group


_IDS = "from sweeps.spec import load_spec; from sweeps.plan import make_plan; import sys, json; " \
       "print(json.dumps([r.run_id for r in make_plan(load_spec(sys.argv[1])).runs]))"


def test_ids_are_stable_across_processes_and_hash_seeds(tmp_path):
  path = write_spec(tmp_path, GRID3)
  here = [r.run_id for r in make_plan(load_spec(path)).runs]
  for seed in ("0", "12345"):
    env = {**os.environ, "PYTHONHASHSEED": seed}
    out = subprocess.run([sys.executable, "-c", _IDS, str(path)], env=env, capture_output=True, text=True,
                         check=True)
    assert json.loads(out.stdout) == here
  # the id is the resolved config's hash: another spelling of the same config is the same run
  same = write_spec(tmp_path, {"zip": {"model.d_model": [32], "model.n_layers": [1], "optim.lr": [0.001],
                                       "train.seed": [0]}}, name="other.yaml")
  assert make_plan(load_spec(same)).runs[0].run_id in here


def test_zip_conditional_subgrid_union_and_generators(tmp_path):
  grid = {"union": [
      {"product": [{"size": ["xs", "s"]}, {"when": {"size": "s"}, "grid": {"schedule": ["cosine", "wsd"]}}]},
      {"zip": {"lr": {"log": [1e-4, 1e-2, 3]}, "optim.warmup": [0.1, 0.2, 0.3]}},
  ]}
  plan = make_plan(load_spec(write_spec(tmp_path, grid)))
  points = [r.point for r in plan.runs]
  assert {"size": "xs"} in points and {"size": "s", "schedule": "wsd"} in points
  assert len(points) == 1 + 2 + 3
  zipped = [r.cfg for r in plan.runs if "lr" in r.point]
  assert [c.optim.lr for c in zipped] == pytest.approx([1e-4, 1e-3, 1e-2])
  assert [c.optim.warmup for c in zipped] == [0.1, 0.2, 0.3]


def test_mixture_simplex_batch_and_token_axes(tmp_path):
  grid = {"mixture": {"simplex": 2}, "batch": [4, 8], "physical_batch": [4], "tokens": [12800]}
  plan = make_plan(load_spec(write_spec(tmp_path, grid)))
  mixes = {r.cfg.data.mixture for r in plan.runs}
  assert len(mixes) == 6 and all(abs(sum(m) - 1) < 1e-12 and min(m) >= 0 for m in mixes)   # C(2+2, 2)
  for r in plan.runs:   # D -> whole steps of B·L tokens
    assert r.cfg.total_steps == round(12800 / (r.cfg.batch.logical * 32)) and r.cfg.batch.micro == 4


def test_sizes_by_width_keep_the_aspect_ratio_and_valid_heads(tmp_path):
  grid = {"size": [96, 256, {"width": 384, "depth": 3}, 1024]}
  plan = make_plan(load_spec(write_spec(tmp_path, grid, sizes={"aspect": 64, "head_dim": 64})))
  dims = [(r.cfg.model.d_model, r.cfg.model.n_layers, r.cfg.model.n_heads, r.cfg.model.d_ff) for r in plan.runs]
  assert dims == [(96, 2, 1, 384), (256, 4, 4, 1024), (384, 3, 6, 1536), (1024, 16, 16, 4096)]


def _independent_train_flops(cfg) -> float:
  """METHOD.md §6.1 by hand: 3 × (q,k,v,o + SwiGLU matmuls + non-causal attention + head) per token."""
  m, s, v = cfg.model, cfg.data.seq_len, cfg.vocab_size
  d, f = m.d_model, m.d_ff
  per_layer = 2 * d * 3 * d + 2 * d * d + 2 * 3 * d * f + 4 * s * d
  return 3.0 * (m.n_layers * per_layer + 2 * d * v) * cfg.total_steps * cfg.tokens_per_step


def test_isoflop_runs_stay_within_one_percent_of_their_budget(tmp_path):
  budgets = [2e11, 1e12, 5e12]
  path = write_spec(tmp_path, None, isoflop={"budgets": budgets, "sizes": 5, "spread": 4})
  plan = make_plan(load_spec(path))
  assert {r.budget for r in plan.runs} == set(budgets)
  for c in budgets:
    runs = [r for r in plan.runs if r.budget == c]
    assert len(runs) == 5
    non_emb = sorted(flops.param_counts(r.cfg.model, r.cfg.vocab_size)["non_embedding"] for r in runs)
    n_star = math.sqrt(c / 120)   # the default guess: Chinchilla's D = 20 N
    assert non_emb[0] < n_star < non_emb[-1]   # placed around N*
    for r in runs:
      assert abs(flops.run_flops(r.cfg)["budget"] - c) <= 0.01 * c
      assert abs(_independent_train_flops(r.cfg) - c) <= 0.01 * c
      assert r.cfg.total_steps == int(r.cfg.total_steps) >= 1


def test_isoflop_n_star_from_a_previous_fit(tmp_path):
  (tmp_path / "fit.json").write_text(json.dumps({"method": "approach2", "k_params": 0.5, "a": 0.5}))
  path = write_spec(tmp_path, None, isoflop={"budgets": ["1e12"], "sizes": 3, "spread": 2,
                                             "n_star": {"fit": "fit.json"}})
  spec = load_spec(path)
  runs = make_plan(spec).runs
  n = sorted(flops.param_counts(r.cfg.model, r.cfg.vocab_size)["non_embedding"] for r in runs)
  assert n[0] < 0.5 * 1e12 ** 0.5 < n[-1] and "fit.json" in spec.n_star_source


BAD_SPECS = [
    ({"grid": {"optim.lrr": [1e-3]}}, "grid.optim.lrr: unknown config field"),
    ({"grid": {"lr": []}}, "grid.lr: empty axis"),
    ({"grid": {"mixture": [[0.5, 0.4, 0.2]]}}, "grid.mixture[0]: mixture weights must sum to 1"),
    ({"isoflop": {"budgets": [-1e12]}}, "isoflop.budgets[0]: a budget must be a number > 0"),
    ({"grid": {"tokens": [-5]}}, "grid.tokens[0]: a budget must be a number > 0"),
    ({"grid": {"seed": [0]}, "colour": "red"}, "spec.colour: unknown field"),
    ({"grid": {"size": ["huge"]}}, "unknown size 'huge'"),
    ({"grid": {"zip": {"lr": [1e-3], "seed": [0, 1]}}}, "grid.zip: zipped axes have different lengths"),
    ({"grid": {"lr": [-1.0]}}, "optim.lr: must be > 0"),
    ({"grid": {"size": [{"width": 64, "heads": 3}]}}, "not a valid model"),
]


@pytest.mark.parametrize("fields,message", BAD_SPECS, ids=[m.split(":")[0] for _, m in BAD_SPECS])
def test_bad_specs_raise_one_line_errors_with_exit_code_2(tmp_path, capsys, fields, message):
  fields = dict(fields)
  path = write_spec(tmp_path, fields.pop("grid", None), **fields)
  with pytest.raises(UserError, match=message.replace("[", r"\[").replace("]", r"\]")):
    make_plan(load_spec(path))
  assert lab_main(["sweep", "plan", str(path), "--no-probe"]) == 2
  err = capsys.readouterr().err.strip()
  assert err.count("\n") == 0 and "error:" in err and message.split(":")[0] in err


def test_example_specs_plan_as_documented():
  import pathlib
  import sweeps
  examples = pathlib.Path(sweeps.__file__).parent / "examples"
  by_size = make_plan(load_spec(examples / "lr_by_size.yaml"))
  assert len(by_size.runs) == 3 * 2 * (1 + 2)   # xs: lr × seed; s: lr × seed × schedule
  iso = make_plan(load_spec(examples / "isoflop.yaml"))
  assert len(iso.runs) == 10 and all(abs(r.flops - r.budget) <= 0.01 * r.budget for r in iso.runs)
