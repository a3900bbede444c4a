"""The sweep index: SWEEP_DIR/index.sqlite (WAL mode), the one transactional record of which run is where.

Every status change is one SQLite transaction; a claim is `BEGIN IMMEDIATE` (the database write lock) + select +
update, so two workers can never claim the same run. Claims carry the worker id, pid, host and a heartbeat time;
a claim is stale when its heartbeat is older than `stale_after` seconds, or at once when its worker's pid is gone
on this host. Stale claims are taken over (the run resumes from its checkpoint). A run that fails is retried until
it has failed `retries + 1` times. `events` logs every claim, takeover and result (who, when, what), which makes
"executed exactly once" checkable. WAL needs one host (or a filesystem with shared memory); the Ray runner keeps
the index on the driver, so remote workers never open it.
"""
import dataclasses
import json
import os
import pathlib
import socket
import sqlite3
import time
import uuid

from mdm_jax.errors import UserError

STATUSES = ("pending", "running", "done", "failed", "diverged")
FINAL = ("done", "diverged")
SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
  run_id TEXT PRIMARY KEY, ord INTEGER NOT NULL, status TEXT NOT NULL DEFAULT 'pending',
  config TEXT NOT NULL, point TEXT, grp TEXT, shape TEXT, flops REAL, steps INTEGER,
  failures INTEGER NOT NULL DEFAULT 0, claims INTEGER NOT NULL DEFAULT 0,
  worker TEXT, pid INTEGER, host TEXT, claimed_at REAL, heartbeat REAL, finished_at REAL,
  step INTEGER, error TEXT, final TEXT);
CREATE TABLE IF NOT EXISTS events (
  id INTEGER PRIMARY KEY AUTOINCREMENT, time REAL NOT NULL, run_id TEXT, worker TEXT, event TEXT NOT NULL,
  detail TEXT);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
"""


@dataclasses.dataclass(frozen=True)
class Worker:
  id: str
  pid: int
  host: str

  @staticmethod
  def here(name: str = "w") -> "Worker":
    host, pid = socket.gethostname(), os.getpid()
    return Worker(f"{name}-{host}-{pid}-{uuid.uuid4().hex[:6]}", pid, host)


@dataclasses.dataclass
class Claim:
  run_id: str
  config: dict
  failures: int
  takeover: bool


class Index:
  def __init__(self, sweep_dir, stale_after: float = 120.0):
    self.dir = pathlib.Path(sweep_dir)
    self.path = self.dir / "index.sqlite"
    self.stale_after = stale_after
    if self.dir.exists() and not self.dir.is_dir():
      raise UserError(str(self.dir), "exists and is not a directory", "give a sweep directory (--out)")
    self.dir.mkdir(parents=True, exist_ok=True)
    self.db = sqlite3.connect(self.path, timeout=60, isolation_level=None)   # one connection per thread
    try:
      self.db.execute("PRAGMA busy_timeout=60000")
      self.db.execute("PRAGMA journal_mode=WAL")
      self.db.execute("PRAGMA synchronous=FULL")
      self.db.executescript(SCHEMA)
      self.db.execute("SELECT run_id, ord, status, config, failures FROM runs LIMIT 1").fetchall()
    except sqlite3.DatabaseError as e:
      self.db.close()
      raise UserError(str(self.path), f"not a usable sweep index ({e})",
                      "restore it, or start the sweep in a new --out directory") from None

  def close(self):
    self.db.close()

  def _tx(self):
    return _Transaction(self.db)

  # --- plan ----------------------------------------------------------------------------------------------------

  def add_runs(self, runs) -> int:
    """Insert planned runs (PlannedRun-like) that are not yet known; returns how many were new."""
    with self._tx() as db:
      start = db.execute("SELECT COALESCE(MAX(ord), -1) + 1 FROM runs").fetchone()[0]
      before = db.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
      for i, r in enumerate(runs):
        db.execute("INSERT OR IGNORE INTO runs (run_id, ord, config, point, grp, shape, flops, steps) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                   (r.run_id, start + i, json.dumps(r.cfg.to_dict(), sort_keys=True), json.dumps(r.point),
                    r.group, r.shape, r.flops, r.cfg.total_steps))
      return db.execute("SELECT COUNT(*) FROM runs").fetchone()[0] - before

  def set_meta(self, **items):
    with self._tx() as db:
      for k, v in items.items():
        db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (k, json.dumps(v)))

  def meta(self, key: str, default=None):
    row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return json.loads(row[0]) if row else default

  # --- claims --------------------------------------------------------------------------------------------------

  def claim(self, worker: Worker, limit: int = 1, same_group: bool = False) -> list[Claim]:
    """Atomically claim up to `limit` runnable runs (pending, retryable failed, or stale running), in plan order
    grouped by shape so compiled programs are reused; with same_group, all claimed runs share one group key."""
    retries = int(self.meta("retries", 1))
    now = time.time()
    with self._tx() as db:
      rows = db.execute(
          "SELECT run_id, status, config, failures, grp, worker, pid, host, heartbeat FROM runs "
          "WHERE status = 'pending' OR (status = 'failed' AND failures <= ?) OR status = 'running' "
          "ORDER BY shape, grp, ord", (retries,)).fetchall()
      picked = []
      for run_id, status, config, failures, grp, owner, pid, host, beat in rows:
        if status == "running" and not self._stale(pid, host, beat, now):
          continue
        if same_group and picked and grp != picked[0][4]:
          continue
        picked.append((run_id, status, config, failures, grp, owner))
        if len(picked) == limit:
          break
      out = []
      for run_id, status, config, failures, _, owner in picked:
        db.execute("UPDATE runs SET status = 'running', worker = ?, pid = ?, host = ?, claimed_at = ?, "
                   "heartbeat = ?, claims = claims + 1 WHERE run_id = ?",
                   (worker.id, worker.pid, worker.host, now, now, run_id))
        takeover = status == "running"
        _event(db, run_id, worker.id, "takeover" if takeover else "claim",
               f"from {owner}" if takeover else f"was {status}")
        out.append(Claim(run_id, json.loads(config), failures, takeover))
      return out

  def _stale(self, pid, host, beat, now) -> bool:
    if beat is None or now - beat > self.stale_after:
      return True
    if host == socket.gethostname() and pid and pid != os.getpid():
      try:
        os.kill(pid, 0)
      except ProcessLookupError:
        return True   # the claiming process is gone: no need to wait for the heartbeat to age
      except PermissionError:
        pass
    return False

  def heartbeat(self, worker: Worker, run_ids=None) -> None:
    with self._tx() as db:
      if run_ids is None:
        db.execute("UPDATE runs SET heartbeat = ? WHERE worker = ? AND status = 'running'", (time.time(), worker.id))
      else:
        for run_id in run_ids:
          db.execute("UPDATE runs SET heartbeat = ? WHERE worker = ? AND run_id = ? AND status = 'running'",
                     (time.time(), worker.id, run_id))

  def event(self, run_id: str, worker: Worker, event: str, detail: str = ""):
    with self._tx() as db:
      _event(db, run_id, worker.id, event, detail)

  def finish(self, run_id: str, worker: Worker, status: str, step: int | None = None, final: dict | None = None,
             error: str | None = None) -> bool:
    """Record a result of a run this worker holds; `interrupted` releases it back to pending. False (and
    nothing changed but an event) if the claim was taken over meanwhile."""
    if status not in (*STATUSES, "interrupted"):
      raise ValueError(f"unknown status {status!r}")
    new = "pending" if status == "interrupted" else status
    with self._tx() as db:
      owner = db.execute("SELECT worker, status FROM runs WHERE run_id = ?", (run_id,)).fetchone()
      if owner is None or owner[0] != worker.id or owner[1] != "running":
        _event(db, run_id, worker.id, "lost-claim", f"result {status} not recorded; owner {owner}")
        return False
      db.execute("UPDATE runs SET status = ?, finished_at = ?, step = ?, final = ?, error = ?, "
                 "failures = failures + ?, heartbeat = NULL WHERE run_id = ?",
                 (new, time.time(), step, json.dumps(final) if final is not None else None, error,
                  int(status == "failed"), run_id))
      _event(db, run_id, worker.id, status, (error or "").strip().splitlines()[-1:][0] if error else "")
      return True

  # --- queries -------------------------------------------------------------------------------------------------

  def counts(self) -> dict:
    out = dict.fromkeys(STATUSES, 0)
    out.update(dict(self.db.execute("SELECT status, COUNT(*) FROM runs GROUP BY status").fetchall()))
    return out

  def runnable(self) -> int:
    """Runs a worker could claim now (pending, retryable failed, stale running)."""
    retries = int(self.meta("retries", 1))
    now = time.time()
    n = self.db.execute("SELECT COUNT(*) FROM runs WHERE status = 'pending' OR (status = 'failed' AND "
                        "failures <= ?)", (retries,)).fetchone()[0]
    running = self.db.execute("SELECT pid, host, heartbeat FROM runs WHERE status = 'running'").fetchall()
    return n + sum(self._stale(pid, host, beat, now) for pid, host, beat in running)

  def rows(self, status: str | None = None) -> list[dict]:
    cur = self.db.execute("SELECT * FROM runs" + (" WHERE status = ?" if status else "") + " ORDER BY ord",
                          (status,) if status else ())
    names = [c[0] for c in cur.description]
    return [dict(zip(names, row)) for row in cur.fetchall()]

  def events(self, run_id: str | None = None) -> list[dict]:
    cur = self.db.execute("SELECT time, run_id, worker, event, detail FROM events" +
                          (" WHERE run_id = ?" if run_id else "") + " ORDER BY id", (run_id,) if run_id else ())
    return [dict(zip(("time", "run_id", "worker", "event", "detail"), r)) for r in cur.fetchall()]

  def run_dir(self, run_id: str) -> pathlib.Path:
    return self.dir / "runs" / run_id


def _event(db, run_id, worker_id, event, detail=""):
  db.execute("INSERT INTO events (time, run_id, worker, event, detail) VALUES (?, ?, ?, ?, ?)",
             (time.time(), run_id, worker_id, event, detail))


class _Transaction:
  """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error): takes the write lock up front, so read-then-write is atomic."""

  def __init__(self, db: sqlite3.Connection):
    self.db = db

  def __enter__(self):
    self.db.execute("BEGIN IMMEDIATE")
    return self.db

  def __exit__(self, exc_type, exc, tb):
    self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")
    return False
