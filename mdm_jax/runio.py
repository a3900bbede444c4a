"""Crash-safe files: every JSON/text/figure output written atomically, metrics.jsonl appended one whole line at a time.

Atomic = write a temporary file in the target's directory, fsync it, rename it over the target, fsync the directory:
a reader (or a crash at any instant) sees the old file or the new one, never half of either. All report, index and
run-file writers in the lab go through `write_json_atomic` / `write_text_atomic` / `atomic_path`.

JSON is strict: NaN and ±inf are written as null (json.dumps would emit the non-standard tokens NaN/Infinity).
A metrics reader tolerates a torn last line (a crash mid-append); a writer first cuts such a tail off, and a resumed
run first drops lines logged after the checkpoint it restarts from, so every logged step appears exactly once.
"""
import contextlib
import json
import math
import os
import pathlib
import tempfile
import time

RUN_JSON, METRICS, RUN_LOG = "run.json", "metrics.jsonl", "run.log"


@contextlib.contextmanager
def atomic_path(path: str | pathlib.Path):
  """Yields a temporary path next to `path` (same suffix, so writers that infer a format from it still work);
  once the block finishes it is fsynced and renamed over `path`. On error the temporary file is removed."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
  os.close(fd)
  try:
    yield pathlib.Path(tmp)
    _fsync_file(tmp)
    os.replace(tmp, path)
    _fsync_dir(path.parent)
  except BaseException:
    pathlib.Path(tmp).unlink(missing_ok=True)
    raise


def write_text_atomic(path: str | pathlib.Path, text: str | bytes) -> pathlib.Path:
  with atomic_path(path) as tmp:
    if isinstance(text, bytes):
      tmp.write_bytes(text)
    else:
      tmp.write_text(text)
  return pathlib.Path(path)


def dumps(obj, indent: int | None = None) -> str:
  """Strict JSON (non-finite floats -> null), keys sorted; numpy/jax scalars and arrays as plain values."""
  return json.dumps(_finite(obj), indent=indent, sort_keys=True, default=_plain, allow_nan=False)


def write_json_atomic(path: str | pathlib.Path, obj, indent: int = 1) -> pathlib.Path:
  return write_text_atomic(path, dumps(obj, indent) + "\n")


def read_json(path: str | pathlib.Path) -> dict:
  return json.loads(pathlib.Path(path).read_text())


def log_line(run_dir: str | pathlib.Path, message: str) -> None:
  """One timestamped line in RUN_DIR/run.log, the run's human-readable log of notable events (appended whole)."""
  append_text(pathlib.Path(run_dir) / RUN_LOG, f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')} {message}\n")


def _plain(x):
  """JSON for numpy/jax scalars and small arrays."""
  if hasattr(x, "tolist"):
    return _finite(x.tolist())
  raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def _finite(obj):
  if isinstance(obj, float):
    return obj if math.isfinite(obj) else None
  if isinstance(obj, dict):
    return {k: _finite(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_finite(v) for v in obj]
  return obj


def _fsync_file(path) -> None:
  fd = os.open(path, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def _fsync_dir(path) -> None:
  """Make a rename durable (POSIX: the directory entry lives in the directory's own data)."""
  try:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
  except OSError:
    return   # not supported on this platform/filesystem
  try:
    os.fsync(fd)
  except OSError:
    pass
  finally:
    os.close(fd)


def append_text(path: str | pathlib.Path, line: str) -> None:
  """One os.write of a whole line to an O_APPEND descriptor, then fsync: concurrent appenders never interleave
  inside a line, and a crash leaves at most one torn line at the end."""
  fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
  try:
    data = line.encode()
    written = os.write(fd, data)
    if written != len(data):   # a short write (disk full): finish it, the reader drops a torn tail anyway
      os.write(fd, data[written:])
    os.fsync(fd)
  finally:
    os.close(fd)


class MetricsLog:
  """Append-only JSONL; each record is one write() of a full line, fsynced. A torn tail is cut off first."""

  def __init__(self, path: str | pathlib.Path):
    self.path = pathlib.Path(path)
    self._checked = False

  def append(self, record: dict) -> None:
    if not self._checked:
      self.repair()
    append_text(self.path, dumps(record) + "\n")

  def repair(self) -> None:
    """Cut an unterminated last line (a crash mid-append), so the next append starts on a fresh line."""
    self._checked = True
    if not self.path.exists():
      return
    with open(self.path, "rb+") as f:
      data = f.read()
      if data and not data.endswith(b"\n"):
        f.truncate(data.rfind(b"\n") + 1)
        f.flush()
        os.fsync(f.fileno())

  def truncate_after(self, step: int) -> None:
    """Keep only records with record["step"] <= step (resuming from a checkpoint at `step`; 0: from scratch)."""
    self._checked = True
    if not self.path.exists():
      return
    kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= step]
    write_text_atomic(self.path, "".join(dumps(r) + "\n" for r in kept))


def read_metrics(path: str | pathlib.Path) -> list[dict]:
  """All complete records; a torn (unterminated or unparsable) last line is skipped, a bad earlier line raises."""
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
