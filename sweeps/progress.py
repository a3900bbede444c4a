"""Watching a sweep: one live bar (finished runs, running/failed/diverged counts, ETA) and the `status` report."""
import json
import pathlib
import threading
import time

from mdm_jax import runio
from sweeps.index import Index


class LiveBar:
  """A tqdm bar over the sweep's runs, refreshed from the index by a thread (its own connection) every `every` s.
  Works the same for every runner, since all of them record progress only in the index."""

  def __init__(self, sweep_dir, enabled: bool = True, every: float = 1.0):
    self.sweep_dir, self.enabled, self.every = sweep_dir, enabled, every
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._loop, daemon=True, name="sweep-progress")

  def __enter__(self):
    if self.enabled:
      self._thread.start()
    return self

  def __exit__(self, *exc):
    self._stop.set()
    if self.enabled:
      self._thread.join()
    return False

  def _loop(self):
    from tqdm.auto import tqdm
    index = Index(self.sweep_dir)
    counts = index.counts()
    total = sum(counts.values())
    finished = lambda c: c["done"] + c["diverged"]
    bar = tqdm(total=total, initial=finished(counts), unit="run", desc="sweep", dynamic_ncols=True)
    try:
      while True:
        stop = self._stop.wait(self.every)
        counts = index.counts()
        bar.update(finished(counts) - bar.n)
        bar.set_postfix(running=counts["running"], failed=counts["failed"], diverged=counts["diverged"],
                        pending=counts["pending"], refresh=True)
        if stop:
          break
    finally:
      bar.close()
      index.close()


def status_report(sweep_dir, show_runs: bool = False) -> str:
  """Counts by status, FLOPs done of planned, the running runs (worker, heartbeat age, last logged step) and the
  failed ones with the last line of their error."""
  sweep_dir = pathlib.Path(sweep_dir)
  index = Index(sweep_dir)
  try:
    counts, rows = index.counts(), index.rows()
  finally:
    index.close()
  total = sum(counts.values())
  planned = sum(r["flops"] or 0 for r in rows)
  done = sum(r["flops"] or 0 for r in rows if r["status"] in ("done", "diverged"))
  lines = [f"{sweep_dir}: {total} runs  " + "  ".join(f"{k} {v}" for k, v in counts.items()),
           f"FLOPs finished {done:.4g} of {planned:.4g} planned ({100 * done / planned if planned else 0:.1f} %)"]
  now = time.time()
  for r in rows:
    if r["status"] == "running":
      step = _last_step(sweep_dir / "runs" / r["run_id"])
      age = f"{now - r['heartbeat']:.0f} s ago" if r["heartbeat"] else "never"
      lines.append(f"  running  {r['run_id']}  step {step}/{r['steps']}  worker {r['worker']}  heartbeat {age}")
  for r in rows:
    if r["status"] == "failed":
      last = (r["error"] or "").strip().splitlines()[-1:] or ["?"]
      lines.append(f"  failed   {r['run_id']}  after {r['failures']} attempt(s): {last[0]}")
    if r["status"] == "diverged":
      lines.append(f"  diverged {r['run_id']}  at step {_diverged_at(sweep_dir / 'runs' / r['run_id'])}")
  if show_runs:
    lines.append("")
    for r in rows:
      final = json.loads(r["final"]) if r["final"] else {}
      loss = final.get("eval/loss", final.get("train/loss"))
      lines.append(f"  {r['run_id']}  {r['status']:<8} step {r['step'] or 0:>6}/{r['steps']:<6} "
                   f"loss {loss if loss is None else f'{loss:.4f}'}  {r['point']}")
  return "\n".join(lines)


def _last_step(run_dir: pathlib.Path):
  rows = runio.read_metrics(run_dir / runio.METRICS) if (run_dir / runio.METRICS).exists() else []
  return rows[-1].get("step", 0) if rows else 0


def _diverged_at(run_dir: pathlib.Path):
  try:
    return runio.read_json(run_dir / runio.RUN_JSON).get("diverged_at")
  except (OSError, json.JSONDecodeError):
    return None
