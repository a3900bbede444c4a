"""Vmapped groups: per-run results equal one-by-one training, per-member divergence, resume and the run files."""
import shutil

import jax
import numpy as np
import pytest

from mdm_jax import checkpoint, runio, sharding
from mdm_jax.config import load_config
from mdm_jax.group import group_key, train_group
from mdm_jax.train import shape_key, train

TINY = ["model.d_model=32", "model.n_layers=2", "model.n_heads=1", "model.d_ff=128", "data.seq_len=32",
        "batch.logical=4", "batch.physical=4", "train.steps=6", "train.log_every=2", "train.eval_every=6",
        "train.checkpoint_every=3", "train.eval_batches=1", "diffusion.eval_t_points=2", "train.peak_flops=1e11"]
MEMBERS = [{"optim.lr": 1e-3, "train.seed": 0}, {"optim.lr": 3e-3, "train.seed": 1},
           {"optim.lr": 1e-2, "train.seed": 2, "optim.lr_schedule": "wsd", "optim.b2": 0.99}]


@pytest.fixture(scope="module")
def cfgs():
  base = load_config("tiny", TINY)
  return [base.replace(**m) for m in MEMBERS]


@pytest.fixture(scope="module")
def singles(cfgs, tmp_path_factory):
  root = tmp_path_factory.mktemp("singles")
  return [train(c, root / str(i), progress=False).run_dir for i, c in enumerate(cfgs)]


def _losses(run_dir):
  return [(r["step"], r["train/loss"], r.get("eval/loss")) for r in runio.read_metrics(run_dir / runio.METRICS)]


def _assert_same_run(group_dir, single_dir, atol=1e-5):
  a, b = _losses(group_dir), _losses(single_dir)
  assert [s for s, *_ in a] == [s for s, *_ in b]
  for (_, la, ea), (_, lb, eb) in zip(a, b):
    assert la == pytest.approx(lb, abs=atol) and (ea is None) == (eb is None)
    if ea is not None:
      assert ea == pytest.approx(eb, abs=atol)
  # Parameters agree to float noise; Adam can amplify it for a coordinate whose gradient is ~0 (a rare token's
  # embedding row), so compare the whole tree in relative norm rather than element by element.
  pa, pb = checkpoint.load_params(group_dir), checkpoint.load_params(single_dir)
  diff = np.sqrt(sum(np.sum((x - y) ** 2) for x, y in zip(jax.tree.leaves(pa), jax.tree.leaves(pb))))
  norm = np.sqrt(sum(np.sum(y ** 2) for y in jax.tree.leaves(pb)))
  assert diff / norm < 1e-4


def test_group_key_separates_shapes_and_loops_but_not_hyperparameters(cfgs):
  assert len({group_key(c) for c in cfgs}) == 1
  assert group_key(cfgs[0].replace(**{"model.d_ff": 64})) != group_key(cfgs[0])
  assert group_key(cfgs[0].replace(**{"train.steps": 7})) != group_key(cfgs[0])
  # CompleteP compiles width-dependent multipliers in: such runs must not share a program or a group
  wide, narrow = (cfgs[0].replace(**{"param.parametrization": "completep", "param.base_width": w,
                                     "param.base_depth": 2}) for w in (16, 32))
  mesh = sharding.make_mesh(wide.mesh)
  assert shape_key(wide, mesh) != shape_key(narrow, mesh) and group_key(wide) != group_key(narrow)
  assert shape_key(cfgs[0], mesh) == shape_key(cfgs[1], mesh)   # LR and seed are state values


def test_vmapped_group_equals_one_by_one_and_isolates_a_diverging_member(cfgs, singles, tmp_path, monkeypatch):
  monkeypatch.setenv("MDM_LAB_FAULTS", f"{cfgs[1].fingerprint()}:nan@4")   # member 1 only
  results = train_group(cfgs, [tmp_path / str(i) for i in range(3)])
  assert [r.status for r in results] == ["done", "diverged", "done"]
  for i in (0, 2):
    _assert_same_run(tmp_path / str(i), singles[i])
  diverged = runio.read_json(tmp_path / "1" / runio.RUN_JSON)
  assert diverged["status"] == "diverged" and diverged["diverged_at"] == 5
  logged, alone = _losses(tmp_path / "1"), _losses(singles[1])[:3]   # steps 2, 3 and 4 were logged
  assert [s for s, *_ in logged] == [2, 3, 4]
  assert [loss for _, loss, _ in logged] == pytest.approx([loss for _, loss, _ in alone], abs=1e-5)
  alone, grouped = runio.read_json(singles[0] / runio.RUN_JSON), runio.read_json(tmp_path / "0" / runio.RUN_JSON)
  assert set(grouped) - set(alone) == {"group_size"} and grouped["run_id"] == alone["run_id"]
  assert grouped["config"] == {**alone["config"], "output_dir": grouped["config"]["output_dir"]}


def test_interrupted_group_resumes_as_a_group_or_member_by_member(cfgs, singles, tmp_path, monkeypatch):
  dirs = [tmp_path / str(i) for i in range(3)]
  monkeypatch.setenv("MDM_LAB_FAULTS", f"{cfgs[0].fingerprint()}:interrupt@3")
  assert [r.status for r in train_group(cfgs, dirs)] == ["interrupted"] * 3
  monkeypatch.delenv("MDM_LAB_FAULTS")
  shutil.copytree(dirs[2], tmp_path / "alone")
  assert train(cfgs[2], tmp_path / "alone", progress=False).status == "done"   # a member resumed by `train`
  _assert_same_run(tmp_path / "alone", singles[2])
  assert [r.status for r in train_group(cfgs, dirs)] == ["done"] * 3
  for i in range(3):
    assert runio.read_json(dirs[i] / runio.RUN_JSON)["resumed_from"] == 3
    _assert_same_run(dirs[i], singles[i])
