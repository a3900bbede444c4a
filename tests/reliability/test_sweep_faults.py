"""A 20-run sweep with three injected faults: NaN loss, a crash, and a corrupt checkpoint.

What the issue asks for, and how this test reads it:
  first pass (no retries)  17 runs done; the 3 faulty ones recorded with their reasons: NaN -> `diverged` with the
                           step, crash -> `failed` with the error, corrupt checkpoint -> `failed` (its newest
                           checkpoint damaged, then a crash, so the next attempt must restore);
  re-run with one retry    touches none of the 18 finished runs (files, mtimes, index events); the corrupt run
                           recovers from the previous checkpoint and is done; the crash (persistent) fails again;
  re-run once more         nothing runnable, nothing touched;
and in every run the metric lines are exactly the logged steps, each once.

Runner: inprocess. Every claim is one attempt of one run, so a fault touches its own run only and the counts are
per run; under vmap a crash fails its whole group once before the members are retried alone (tested in
tests/sweeps/test_runners.py), which would blur "17 done" on the first pass. All 20 runs share one shape, hence one
compiled program in this process. Two concurrent workers on one sweep (each run executed exactly once) are covered
by tests/sweeps/test_runners.py::test_two_worker_processes_run_every_run_exactly_once.
"""
import hashlib
import pathlib

from labs.cli import main
from mdm_jax import checkpoint, faults, runio
from mdm_jax.train import train
from sweeps.index import Index
from tests.reliability.conftest import TINY, deterministic, write_spec

# 8 steps: lines at 2, 4, 6, 8; checkpoints at 4 and 8; eval at the end.
SHAPE = dict(TINY, **{"train.steps": 8, "train.log_every": 2, "train.checkpoint_every": 4, "train.eval_every": 8})
GRID = {"lr": [1e-3, 2e-3, 3e-3, 5e-3], "seed": [0, 1, 2, 3, 4]}
DONE_STEPS = [2, 4, 6, 8]


def _sweep(spec, out, retries: int) -> int:
  return main(["sweep", "run", str(spec), "--out", str(out), "--runner", "inprocess", "--retries", str(retries),
               "--no-progress"])


def _index(out):
  index = Index(out)
  try:
    return {r["run_id"]: r for r in index.rows()}, index.events()
  finally:
    index.close()


def _snapshot(run_dirs) -> dict:
  """Every file and directory under the run dirs: path -> (mtime_ns, size, sha256 of files)."""
  out = {}
  for run_dir in run_dirs:
    for p in sorted([run_dir, *run_dir.rglob("*")]):
      st = p.stat()
      digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None
      out[str(p)] = (st.st_mtime_ns, st.st_size if p.is_file() else None, digest)
  return out


def _metric_steps(run_dir: pathlib.Path) -> list[int]:
  """The logged steps, after checking each line of metrics.jsonl is one whole record (nothing torn or doubled)."""
  path = run_dir / runio.METRICS
  rows = runio.read_metrics(path)
  assert path.read_bytes().endswith(b"\n") and path.read_text().count("\n") == len(rows)
  return [r["step"] for r in rows]


def test_twenty_runs_three_faults(tmp_path, monkeypatch):
  spec = write_spec(tmp_path, GRID, set=SHAPE)
  out = tmp_path / "sweep"
  from sweeps.plan import make_plan
  from sweeps.spec import load_spec
  planned = make_plan(load_spec(spec)).runs
  ids = [r.run_id for r in planned]
  assert len(set(ids)) == 20
  nan_id, crash_id, corrupt_id = ids[3], ids[10], ids[16]
  monkeypatch.setenv(faults.ENV, f"{nan_id}:nan@3,{crash_id}:raise@6,"
                                 f"{corrupt_id}:corrupt@8:once,{corrupt_id}:raise@8:once")
  healthy = [i for i in ids if i not in (nan_id, crash_id, corrupt_id)]
  run_dir = {i: out / "runs" / i for i in ids}

  # --- first pass: 17 done, 3 recorded with their reasons ---------------------------------------------------------
  assert _sweep(spec, out, retries=0) == 1   # 1: a run failed
  rows, events = _index(out)
  assert {i: rows[i]["status"] for i in healthy} == dict.fromkeys(healthy, "done")
  assert (rows[nan_id]["status"], rows[crash_id]["status"], rows[corrupt_id]["status"]) == (
      "diverged", "failed", "failed")
  assert sum(r["status"] == "done" for r in rows.values()) == 17
  nan_run = runio.read_json(run_dir[nan_id] / runio.RUN_JSON)
  assert (nan_run["status"], nan_run["diverged_at"], nan_run["final"]["step"]) == ("diverged", 4, 2)
  assert nan_run["diverged_reason"].startswith("non-finite loss")
  for run_id, step in ((crash_id, 6), (corrupt_id, 8)):
    failed = runio.read_json(run_dir[run_id] / runio.RUN_JSON)
    assert failed["status"] == "failed" and f"injected fault: raise at step {step}" in failed["error"]
    assert f"RuntimeError: injected fault: raise at step {step}" in rows[run_id]["error"]
    assert (run_dir[run_id] / "error.log").read_text().count("Traceback") == 1
  assert (run_dir[corrupt_id] / faults.FIRED).read_text().split() == ["corrupt@8:once", "raise@8:once"]
  assert [e["event"] for e in events].count("start") == 20   # one attempt each

  # --- re-run with one retry: the finished runs are not touched; the corrupt run recovers ----------------------
  finished = [run_dir[i] for i in healthy + [nan_id]]
  before_files, before_events = _snapshot(finished), len(events)
  assert _sweep(spec, out, retries=1) == 1   # the persistent crash fails again
  rows, events = _index(out)
  assert _snapshot(finished) == before_files
  new = [(e["run_id"], e["event"]) for e in events[before_events:]]
  assert sorted(new) == sorted([(crash_id, "claim"), (crash_id, "start"), (crash_id, "failed"),
                                (corrupt_id, "claim"), (corrupt_id, "start"), (corrupt_id, "done")])
  assert (rows[crash_id]["status"], rows[crash_id]["failures"]) == ("failed", 2)
  assert (run_dir[crash_id] / "error.log").read_text().count("Traceback") == 2
  assert rows[corrupt_id]["status"] == "done"
  counts = {s: sum(r["status"] == s for r in rows.values()) for s in ("done", "diverged", "failed")}
  assert counts == {"done": 18, "diverged": 1, "failed": 1}

  recovered = runio.read_json(run_dir[corrupt_id] / runio.RUN_JSON)
  assert (recovered["status"], recovered["resumed_from"]) == ("done", 4)
  (fallback,) = recovered["restore_fallbacks"]
  assert (fallback["step"], fallback["resumed_from"]) == (8, 4)
  assert pathlib.Path(fallback["moved_to"]).parent == run_dir[corrupt_id] / checkpoint.CORRUPT_DIR
  assert "checkpoint at step 8 unreadable" in (run_dir[corrupt_id] / runio.RUN_LOG).read_text()
  # ... and it trained exactly as if nothing had happened
  monkeypatch.delenv(faults.ENV)
  clean = train(planned[16].cfg, tmp_path / "clean", progress=False)
  assert clean.status == "done"
  assert deterministic(runio.read_metrics(run_dir[corrupt_id] / runio.METRICS)) == deterministic(
      runio.read_metrics(tmp_path / "clean" / runio.METRICS))

  # --- nothing lost, nothing doubled: metric lines are the logged steps ------------------------------------------
  expected = {**dict.fromkeys(healthy + [corrupt_id], DONE_STEPS), nan_id: [2], crash_id: [2, 4, 6]}
  assert {i: _metric_steps(run_dir[i]) for i in ids} == expected

  # --- re-running once more (faults still planned) touches nothing at all -----------------------------------------
  monkeypatch.setenv(faults.ENV, f"{nan_id}:nan@3,{crash_id}:raise@6")
  everything, n_events = _snapshot(run_dir.values()), len(events)
  assert _sweep(spec, out, retries=1) == 1
  rows_after, events_after = _index(out)
  assert len(events_after) == n_events and _snapshot(run_dir.values()) == everything
  assert rows_after == rows
