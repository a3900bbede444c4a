"""The SQLite index: atomic claims across processes, stale-claim takeover, retry limits, lost claims."""
import dataclasses
import json
import multiprocessing
import os
import subprocess
import sys
import time

from mdm_jax.config import Config
from sweeps.index import Index, Worker


@dataclasses.dataclass
class _Run:   # the fields of a PlannedRun the index stores
  run_id: str
  cfg: Config
  point: dict
  group: str = "g"
  shape: str = "s"
  flops: float = 1.0


def _runs(n):
  return [_Run(f"run{i:03d}", Config(), {"i": i}) for i in range(n)]


def _claim_all(sweep_dir, out_path):
  index = Index(sweep_dir)
  worker = Worker.here("t")
  got = []
  while claims := index.claim(worker, 1):
    got += [c.run_id for c in claims]
    index.finish(claims[0].run_id, worker, "done")
  index.close()
  with open(out_path, "w") as f:
    json.dump(got, f)


def test_concurrent_processes_claim_every_run_exactly_once(tmp_path):
  index = Index(tmp_path)
  assert index.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
  assert index.add_runs(_runs(60)) == 60 and index.add_runs(_runs(60)) == 0   # re-planning adds nothing
  ctx = multiprocessing.get_context("spawn")
  procs = [ctx.Process(target=_claim_all, args=(tmp_path, tmp_path / f"got{i}.json")) for i in range(4)]
  for p in procs:
    p.start()
  for p in procs:
    p.join(120)
  claimed = [r for i in range(4) for r in json.loads((tmp_path / f"got{i}.json").read_text())]
  assert sorted(claimed) == [f"run{i:03d}" for i in range(60)]   # none twice, none left
  assert index.counts()["done"] == 60
  assert [e["event"] for e in index.events()].count("claim") == 60


def test_claims_of_a_dead_worker_are_taken_over_at_once(tmp_path):
  index = Index(tmp_path)
  index.add_runs(_runs(2))
  dead = subprocess.Popen([sys.executable, "-c", "pass"])
  dead.wait()
  ghost = Worker("ghost", dead.pid, Worker.here().host)
  assert [c.run_id for c in index.claim(ghost, 1)] == ["run000"]
  me = Worker.here("me")
  taken = index.claim(me, 2)
  assert [(c.run_id, c.takeover) for c in taken] == [("run000", True), ("run001", False)]
  assert not index.finish("run000", ghost, "done")   # the ghost's late result is not recorded
  assert index.finish("run000", me, "done")
  assert [e["event"] for e in index.events("run000")] == ["claim", "takeover", "lost-claim", "done"]


def test_live_claims_are_kept_until_their_heartbeat_goes_stale(tmp_path):
  index = Index(tmp_path, stale_after=0.5)
  index.add_runs(_runs(1))
  alive = Worker("alive", os.getppid(), Worker.here().host)   # a live process that is not us
  index.claim(alive, 1)
  other = Worker.here("other")
  assert index.claim(other, 1) == []
  index.heartbeat(alive)
  assert index.claim(other, 1) == []
  time.sleep(0.7)
  assert [c.run_id for c in index.claim(other, 1)] == ["run000"]


def test_failed_runs_are_retried_up_to_the_limit_and_interrupted_ones_released(tmp_path):
  index = Index(tmp_path)
  index.add_runs(_runs(1))
  index.set_meta(retries=2)
  w = Worker.here()
  for attempt in range(3):
    (c,) = index.claim(w, 1)
    assert c.failures == attempt
    index.finish(c.run_id, w, "failed", error=f"Traceback ...\nRuntimeError: boom {attempt}")
  assert index.claim(w, 1) == [] and index.counts()["failed"] == 1
  row = index.rows()[0]
  assert row["failures"] == 3 and row["error"].endswith("boom 2")
  index.set_meta(retries=3)   # a later `sweep run --retries 3` tries once more
  (c,) = index.claim(w, 1)
  index.finish(c.run_id, w, "interrupted")
  assert index.counts()["pending"] == 1 and index.rows()[0]["failures"] == 3


def test_group_claims_share_one_group_key(tmp_path):
  index = Index(tmp_path)
  runs = _runs(5)
  for r in runs[:2]:
    r.group = "a"
  for r in runs[2:]:
    r.group = "b"
  index.add_runs(runs)
  w = Worker.here()
  first = index.claim(w, 4, same_group=True)
  second = index.claim(w, 4, same_group=True)
  assert [c.run_id for c in first] == ["run000", "run001"]
  assert [c.run_id for c in second] == ["run002", "run003", "run004"]
