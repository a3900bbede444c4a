"""Sweep tests share one tiny run shape (so programs compile once per process) and a persistent compile cache
(so the worker processes, Ray workers and rank processes started by the tests reuse each other's compiles)."""
import pathlib

import pytest
import yaml

# d=32, 2 layers, seq 32, batch 4: seconds per run; checkpoints at 3 and 6 so a killed run has one to resume.
TINY = {"model.d_model": 32, "model.n_layers": 2, "model.n_heads": 1, "model.d_ff": 128, "data.seq_len": 32,
        "batch.logical": 4, "batch.physical": 4, "train.steps": 6, "train.log_every": 2, "train.eval_every": 6,
        "train.checkpoint_every": 3, "train.eval_batches": 1, "diffusion.eval_t_points": 2,
        "train.peak_flops": 1e11}


@pytest.fixture(scope="session", autouse=True)
def _compile_cache(compile_cache):   # tests/conftest.py: one cache shared with the processes these tests start
  yield compile_cache


def write_spec(directory: pathlib.Path, grid, name: str = "spec.yaml", **fields) -> pathlib.Path:
  """A sweep spec on the tiny base: `grid` plus any other top-level fields."""
  spec = {"name": "test", "base": "tiny", "set": dict(TINY), **fields}
  if grid is not None:
    spec["grid"] = grid
  path = pathlib.Path(directory) / name
  path.write_text(yaml.safe_dump(spec, sort_keys=False))
  return path


REFERENCE_GRID = {"lr": [1e-3, 3e-3, 1e-2], "seed": [0]}


def final_losses(sweep_dir: pathlib.Path) -> dict:
  """run_id -> [(step, train loss, eval loss)] of every run with metrics."""
  from mdm_jax import runio
  out = {}
  for run_dir in sorted((pathlib.Path(sweep_dir) / "runs").iterdir()):
    rows = runio.read_metrics(run_dir / runio.METRICS)
    out[run_dir.name] = [(r["step"], r["train/loss"], r.get("eval/loss")) for r in rows]
  return out


def assert_same_losses(a: list, b: list, rtol: float = 1e-5):
  """Equal up to float32 summation order: a vmapped program reduces in another order than a single run's, and the
  difference (~1e-6 relative per step) compounds over the steps of a run."""
  assert [s for s, *_ in a] == [s for s, *_ in b]
  for (_, la, ea), (_, lb, eb) in zip(a, b):
    assert abs(la - lb) <= rtol * abs(lb) and (ea is None) == (eb is None)
    assert ea is None or abs(ea - eb) <= rtol * abs(eb)


@pytest.fixture(scope="session")
def reference(tmp_path_factory):
  """Three runs (three LRs) swept by the in-process runner: what every other runner must reproduce."""
  from labs.cli import main
  root = tmp_path_factory.mktemp("reference")
  spec = write_spec(root, REFERENCE_GRID)
  assert main(["sweep", "run", str(spec), "--out", str(root / "sweep"), "--runner", "inprocess",
               "--no-progress"]) == 0
  return {"spec": spec, "dir": root / "sweep", "losses": final_losses(root / "sweep")}
