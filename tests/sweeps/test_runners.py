"""Runners end to end: recorded divergence and crashes, retries, resume, two workers, a killed worker, vmap."""
import os
import subprocess
import sys

from analysis.rundirs import load_run_dirs
from labs.cli import main
from mdm_jax import runio
from sweeps.index import Index
from sweeps.runners import worker_cpu_sets, worker_env
from tests.sweeps.conftest import TINY, assert_same_losses, final_losses, write_spec


def _run(spec, out, *extra) -> int:
  return main(["sweep", "run", str(spec), "--out", str(out), *extra])


def _events(out):
  index = Index(out)
  try:
    return index.events()
  finally:
    index.close()


def test_divergence_and_crash_are_recorded_and_the_rest_finishes(tmp_path, monkeypatch, capsys):
  spec = write_spec(tmp_path, {"lr": [3e-3], "seed": [0, 1, 2, 3]})
  from sweeps.plan import make_plan
  from sweeps.spec import load_spec
  ids = [r.run_id for r in make_plan(load_spec(spec)).runs]
  diverging, crashing = ids[1], ids[2]
  monkeypatch.setenv("MDM_LAB_FAULTS", f"{diverging}:nan@4,{crashing}:raise@2")
  out = tmp_path / "sweep"
  assert _run(spec, out, "--runner", "inprocess", "--retries", "1") == 1   # 1: a run failed
  assert "sweep" in capsys.readouterr().err   # the live bar
  runs = {r["run_id"]: r for r in Index(out).rows()}
  assert {k: runs[k]["status"] for k in ids} == {ids[0]: "done", diverging: "diverged", crashing: "failed",
                                                  ids[3]: "done"}
  assert runs[crashing]["failures"] == 2 and "injected fault: raise" in runs[crashing]["error"]
  error_log = (out / "runs" / crashing / "error.log").read_text()
  assert error_log.count("Traceback") == 2 and "RuntimeError: injected fault: raise" in error_log
  failed_json = runio.read_json(out / "runs" / crashing / "run.json")
  assert failed_json["status"] == "failed" and "injected fault" in failed_json["error"]
  assert runio.read_json(out / "runs" / diverging / "run.json")["diverged_at"] == 5

  # running the sweep again touches nothing that is finished (and the failed run is out of retries)
  monkeypatch.delenv("MDM_LAB_FAULTS")
  before = len(_events(out))
  assert _run(spec, out, "--runner", "inprocess", "--no-progress") == 1
  assert len(_events(out)) == before
  # ... until it is given another retry, which now succeeds
  assert _run(spec, out, "--runner", "inprocess", "--no-progress", "--retries", "2") == 0
  assert [e["event"] for e in _events(out)[before:]] == ["claim", "start", "done"]

  # analysis reads the sweep directory; TensorBoard export; status
  table = load_run_dirs(out)
  assert len(table) == 3 and [e["run_id"] for e in table.exclusions] == [diverging]
  assert main(["sweep", "export", str(out), "--tensorboard", str(tmp_path / "tb")]) == 0
  assert len(list((tmp_path / "tb").glob("*/events.out.tfevents.*"))) == 4
  capsys.readouterr()
  assert main(["sweep", "status", str(out)]) == 0
  status = capsys.readouterr().out
  assert "done 3" in status and "diverged 1" in status and f"diverged {diverging}  at step 5" in status
  assert main(["sweep", "status", str(tmp_path)]) == 2


def test_vmap_runner_matches_in_process_and_isolates_a_crashing_member(reference, tmp_path, monkeypatch):
  crashing = sorted(reference["losses"])[0]
  monkeypatch.setenv("MDM_LAB_FAULTS", f"{crashing}:raise@4")
  out = tmp_path / "sweep"
  assert _run(reference["spec"], out, "--runner", "vmap", "--retries", "1", "--no-progress") == 1
  got = final_losses(out)
  for run_id, losses in reference["losses"].items():
    if run_id != crashing:
      assert_same_losses(got[run_id], losses)
  rows = {r["run_id"]: r for r in Index(out).rows()}
  assert rows[crashing]["status"] == "failed" and rows[crashing]["failures"] == 2
  starts = [e for e in _events(out) if e["event"] == "start"]
  assert len(starts) == 3 + 3   # one group of 3, then each member of the failed group retried alone
  monkeypatch.delenv("MDM_LAB_FAULTS")
  assert _run(reference["spec"], out, "--runner", "vmap", "--retries", "2", "--no-progress") == 0
  assert_same_losses(final_losses(out)[crashing], reference["losses"][crashing])


def test_two_worker_processes_run_every_run_exactly_once(reference, tmp_path):
  out = tmp_path / "sweep"
  assert _run(reference["spec"], out, "--runner", "processes", "--workers", "2", "--no-progress") == 0
  events = _events(out)
  starts = sorted(e["run_id"] for e in events if e["event"] == "start")
  assert starts == sorted(reference["losses"])   # each run started once, none left
  assert sorted(p.name for p in (out / "logs").iterdir()) == ["worker-0.log", "worker-1.log"]
  for run_id, losses in final_losses(out).items():
    assert_same_losses(losses, reference["losses"][run_id])   # each step logged once, same numbers


def test_worker_processes_share_a_persistent_compile_cache(tmp_path, monkeypatch):
  monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
  assert worker_env(tmp_path)["JAX_COMPILATION_CACHE_DIR"] == str(tmp_path.absolute() / ".jax-cache")
  monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", "/elsewhere")
  assert worker_env(tmp_path)["JAX_COMPILATION_CACHE_DIR"] == "/elsewhere"   # the user's choice is kept


def test_a_killed_worker_is_taken_over_and_its_run_resumes_from_the_checkpoint(tmp_path):
  # 9 steps, checkpoints every 3, SIGKILL after step 7: the save at 6 waited for the one at 3, so at least
  # step 3 is on disk (6 may be too); the restarted sweep takes the dead worker's claim over and resumes.
  spec = write_spec(tmp_path, {"lr": [3e-3], "seed": [0]}, set=dict(TINY, **{"train.steps": 9}))
  straight, out = tmp_path / "straight", tmp_path / "sweep"
  assert _run(spec, straight, "--runner", "inprocess", "--no-progress") == 0
  (run_id,) = final_losses(straight)
  env = {**os.environ, "MDM_LAB_FAULTS": f"{run_id}:kill@7"}
  killed = subprocess.run([sys.executable, "-m", "labs.cli", "sweep", "run", str(spec), "--out", str(out),
                           "--runner", "inprocess", "--no-progress"], env=env, capture_output=True, timeout=600)
  assert killed.returncode == -9, killed.stderr.decode()[-2000:]
  assert Index(out).rows()[0]["status"] == "running"   # the dead worker's claim is left behind
  assert _run(spec, out, "--runner", "inprocess", "--no-progress") == 0
  events = [(e["event"], e["detail"]) for e in _events(out)]
  assert [e for e, _ in events] == ["claim", "start", "takeover", "start", "done"]
  resumed = runio.read_json(out / "runs" / run_id / "run.json")["resumed_from"]
  assert resumed in (3, 6) and events[3][1] == f"latest_checkpoint={resumed}"
  assert_same_losses(final_losses(out)[run_id], final_losses(straight)[run_id])   # every step logged once


def test_worker_cpu_sets_split_this_process_cpus_evenly():
  cpus = sorted(os.sched_getaffinity(0))
  sets = worker_cpu_sets(len(cpus))
  assert sets == [[c] for c in cpus]   # one CPU each
  halves = worker_cpu_sets(1)
  assert halves == [cpus]
  assert worker_cpu_sets(len(cpus) + 1) is None   # more workers than CPUs: no pinning
