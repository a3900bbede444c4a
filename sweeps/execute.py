"""Executing claimed runs and turning every outcome into a recorded result.

An outcome is {"status": done|diverged|interrupted|failed, "step", "final", "error"}. A crash never escapes: its
traceback goes to RUN_DIR/error.log (appended per attempt), run.json gets status `failed` and the error's last
line, and the index keeps the full traceback. A run whose run.json already says done/diverged (a worker died
between writing it and updating the index) is not trained again. Runs train alone (`train`), as a vmapped group
(`train_group`), or as a multi-process jax.distributed job on this host.
"""
import pathlib
import threading
import time
import traceback

from mdm_jax import runio
from sweeps.index import Index, Worker

FINISHED = ("done", "diverged")


def outcome_from_run_json(run_dir: pathlib.Path, run_id: str) -> dict | None:
  """The recorded result of a finished run, or None if it has not finished."""
  path = run_dir / runio.RUN_JSON
  try:
    run = runio.read_json(path)
  except (OSError, ValueError):
    return None
  if run.get("run_id") == run_id and run.get("status") in FINISHED:
    return {"status": run["status"], "step": run.get("step"), "final": run.get("final") or {}, "error": None}
  return None


def record_failure(run_dir: pathlib.Path, cfg_dict: dict, run_id: str, tb: str) -> dict:
  """Keep the traceback in the run folder and mark run.json failed; returns the failed outcome."""
  run_dir.mkdir(parents=True, exist_ok=True)
  runio.append_text(run_dir / "error.log", f"=== {time.strftime('%Y-%m-%dT%H:%M:%S%z')} ===\n{tb}\n")
  path = run_dir / runio.RUN_JSON
  try:
    record = runio.read_json(path)
  except (OSError, ValueError):
    record = {"run_id": run_id, "config": cfg_dict, "diverged_at": None}
  last = tb.strip().splitlines()[-1] if tb.strip() else "unknown error"
  record.update(status="failed", error=f"{last} (traceback in error.log)")
  runio.write_json_atomic(path, record)
  return {"status": "failed", "step": record.get("step"), "final": record.get("final") or {}, "error": tb}


def _config(cfg_dict: dict, run_dir: pathlib.Path):
  from mdm_jax.config import from_dict
  return from_dict({**cfg_dict, "output_dir": str(run_dir)})


def train_one(cfg_dict: dict, run_dir, run_id: str, processes: int = 1) -> dict:
  """Train (or resume, or recognise as finished) one run; never raises for a failing run."""
  run_dir = pathlib.Path(run_dir)
  prior = outcome_from_run_json(run_dir, run_id)
  if prior:
    return prior
  try:
    cfg = _config(cfg_dict, run_dir)
    if processes > 1:
      from mdm_jax import distributed
      result = distributed.train_local(cfg, run_dir, processes)
    else:
      from mdm_jax.train import train
      result = train(cfg, run_dir, progress=False)
    return {"status": result.status, "step": result.step, "final": result.final, "error": None}
  except Exception:   # noqa: BLE001 - a crashing run is a recorded result, not a crash of the sweep
    return record_failure(run_dir, cfg_dict, run_id, traceback.format_exc())


def train_many(cfg_dicts: list[dict], run_dirs, run_ids: list[str]) -> list[dict]:
  """Train same-group runs as one vmapped program; if the group crashes, every member records the failure."""
  from mdm_jax.group import train_group
  run_dirs = [pathlib.Path(d) for d in run_dirs]
  out: list = [outcome_from_run_json(d, i) for d, i in zip(run_dirs, run_ids)]
  todo = [j for j, o in enumerate(out) if o is None]
  if len(todo) == 1:
    j = todo[0]
    out[j] = train_one(cfg_dicts[j], run_dirs[j], run_ids[j])
  elif todo:
    try:
      results = train_group([_config(cfg_dicts[j], run_dirs[j]) for j in todo], [run_dirs[j] for j in todo])
      for j, r in zip(todo, results):
        out[j] = {"status": r.status, "step": r.step, "final": r.final, "error": None}
    except Exception:   # noqa: BLE001
      tb = traceback.format_exc()
      for j in todo:
        out[j] = record_failure(run_dirs[j], cfg_dicts[j], run_ids[j], tb)
  return out


def checkpoint_step(run_dir: pathlib.Path) -> int | None:
  """The latest Orbax step directory on disk, if any (for the index's event log, as `latest_checkpoint`). The run
  resumes from it unless it proves unreadable; then the checkpoint module falls back to an older step and says so
  in run.json and run.log."""
  steps = [int(p.name) for p in (run_dir / "checkpoints").glob("*") if p.name.isdigit()]
  return max(steps) if steps else None


class Heartbeat:
  """Refreshes this worker's claims every `every` seconds from a thread with its own index connection."""

  def __init__(self, sweep_dir, worker: Worker, every: float, run_ids=None):
    self.sweep_dir, self.worker, self.every, self.run_ids = sweep_dir, worker, every, run_ids
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._loop, daemon=True, name="sweep-heartbeat")

  def __enter__(self):
    self._thread.start()
    return self

  def __exit__(self, *exc):
    self._stop.set()
    self._thread.join()
    return False

  def _loop(self):
    index = Index(self.sweep_dir)
    try:
      while not self._stop.wait(self.every):
        index.heartbeat(self.worker, self.run_ids)
    finally:
      index.close()
