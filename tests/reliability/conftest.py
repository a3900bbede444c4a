"""Reliability tests share one tiny run shape (the sweeps tests' shape, so programs compile once per process) and a
persistent JAX compile cache (so the subprocesses they start reuse each other's compiles)."""
import os
import pathlib

import pytest
import yaml

# d=32, 2 layers, seq 32, batch 4, 20 steps: about a second per run once compiled. Logged steps 4, 8, 12, 16, 20;
# checkpoints at 8, 16 and 20 (keep 2), so a corrupt checkpoint at 16 has a readable one at 8 to fall back to.
TINY = {"model.d_model": 32, "model.n_layers": 2, "model.n_heads": 1, "model.d_ff": 128, "data.seq_len": 32,
        "batch.logical": 4, "batch.physical": 4, "train.steps": 20, "train.log_every": 4, "train.eval_every": 20,
        "train.checkpoint_every": 8, "train.eval_batches": 1, "diffusion.eval_t_points": 2,
        "train.peak_flops": 1e11}
LOGGED_STEPS = [4, 8, 12, 16, 20]
# Metrics that must repeat bit for bit when a run is resumed (everything but timings).
DETERMINISTIC = ("step", "tokens", "flops", "train/loss", "optim/lr", "optim/grad_norm", "eval/loss")


def deterministic(rows: list[dict]) -> list[dict]:
  return [{k: r[k] for k in DETERMINISTIC if k in r} for r in rows]


def overrides(**extra) -> list[str]:
  """`--set` items for the tiny run, with dotted-key extras (written with __ for dots)."""
  items = {**TINY, **{k.replace("__", "."): v for k, v in extra.items()}}
  return [f"{k}={v}" for k, v in items.items()]


def cli_set(**extra) -> list[str]:
  return [arg for item in overrides(**extra) for arg in ("--set", item)]


@pytest.fixture(scope="session", autouse=True)
def _compile_cache(compile_cache):   # tests/conftest.py: one cache shared with the processes these tests start
  yield compile_cache


def write_spec(directory: pathlib.Path, grid, name: str = "spec.yaml", **fields) -> pathlib.Path:
  spec = {"name": "reliability", "base": "tiny", "set": dict(TINY), "grid": grid, **fields}
  path = pathlib.Path(directory) / name
  path.write_text(yaml.safe_dump(spec, sort_keys=False))
  return path


_REPORTED: list[str] = []


def report(line: str) -> None:
  """A fact to show in the test session's summary (e.g. the randomly drawn fault step and its seed)."""
  _REPORTED.append(line)


def pytest_terminal_summary(terminalreporter):
  for line in _REPORTED:
    terminalreporter.write_line(f"reliability: {line}")


def subprocess_env(**extra) -> dict:
  """The test session's environment (CPU, caches) for a child process, plus `extra`."""
  root = str(pathlib.Path(__file__).resolve().parents[2])
  env = {**os.environ, **extra}
  env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
  return env
