"""Crash-safe run files: run.json written atomically, metrics.jsonl appended one whole line at a time.

A reader tolerates a torn last line (a crash mid-append); a resumed run first drops lines logged after the
checkpoint it restarts from, so every logged step appears exactly once.
"""
import json
import os
import pathlib
import tempfile

RUN_JSON, METRICS = "run.json", "metrics.jsonl"


def write_json_atomic(path: str | pathlib.Path, obj) -> None:
  """Write to a temporary file in the same directory, fsync, then rename over the target."""
  path = pathlib.Path(path)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  try:
    with os.fdopen(fd, "w") as f:
      json.dump(obj, f, indent=1, sort_keys=True, default=_plain)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    pathlib.Path(tmp).unlink(missing_ok=True)
    raise


def read_json(path: str | pathlib.Path) -> dict:
  return json.loads(pathlib.Path(path).read_text())


def _plain(x):
  """JSON for numpy/jax scalars and small arrays."""
  if hasattr(x, "tolist"):
    return x.tolist()
  raise TypeError(f"not JSON serialisable: {type(x).__name__}")


class MetricsLog:
  """Append-only JSONL; each record is one write() of a full line, flushed and fsynced."""

  def __init__(self, path: str | pathlib.Path):
    self.path = pathlib.Path(path)

  def append(self, record: dict) -> None:
    line = json.dumps(record, sort_keys=True, default=_plain) + "\n"
    with open(self.path, "a") as f:
      f.write(line)
      f.flush()
      os.fsync(f.fileno())

  def truncate_after(self, step: int) -> None:
    """Keep only records with record["step"] <= step (used when resuming from a checkpoint at `step`)."""
    if not self.path.exists():
      return
    kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= step]
    tmp = self.path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))
    os.replace(tmp, self.path)


def read_metrics(path: str | pathlib.Path) -> list[dict]:
  """All complete records; a torn (unterminated or unparsable) last line is skipped."""
  path = pathlib.Path(path)
  if not path.exists():
    return []
  lines = path.read_text().split("\n")
  records = []
  for i, line in enumerate(lines):
    if not line.strip():
      continue
    try:
      records.append(json.loads(line))
    except json.JSONDecodeError:
      if i >= len(lines) - 2:   # only the final line may be torn
        break
      raise
  return records
