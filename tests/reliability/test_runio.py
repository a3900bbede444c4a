"""Crash-safe files: atomic JSON/text writes under a real SIGKILL, strict JSON, and line-atomic metrics."""
import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from mdm_jax import runio

# A child that rewrites one JSON file as fast as it can: every version is a 200 kB document with a version number.
_REWRITER = """
import sys
from mdm_jax import runio
path = sys.argv[1]
i = 0
while True:
  runio.write_json_atomic(path, {"version": i, "payload": "x" * 200_000})
  i += 1
"""


def test_a_file_rewritten_atomically_survives_sigkill_at_any_moment(tmp_path):
  path = tmp_path / "run.json"
  rng = np.random.default_rng(7)
  for delay in rng.uniform(0.05, 0.4, size=4):
    child = subprocess.Popen([sys.executable, "-c", _REWRITER, str(path)])
    time.sleep(0.5 + delay)   # start-up, then some writes
    child.send_signal(signal.SIGKILL)
    child.wait()
    doc = json.loads(path.read_text())   # always one whole version, never a torn one
    assert doc["payload"] == "x" * 200_000 and doc["version"] >= 0
  leftovers = [p.name for p in tmp_path.iterdir() if p.name != "run.json"]
  assert all(name.startswith(".run.") and ".tmp" in name for name in leftovers)   # only unrenamed temporaries


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path):
  path = tmp_path / "fit.json"
  runio.write_json_atomic(path, {"a": 1})
  with pytest.raises(RuntimeError):
    with runio.atomic_path(path) as tmp:
      tmp.write_text('{"a": ')
      raise RuntimeError("writer crashed")
  assert runio.read_json(path) == {"a": 1} and [p.name for p in tmp_path.iterdir()] == ["fit.json"]


def test_json_is_strict_non_finite_numbers_become_null(tmp_path):
  runio.write_json_atomic(tmp_path / "r.json", {"loss": float("nan"), "x": [np.float32("inf"), np.float64(1.5)],
                                                "arr": np.array([1.0, np.nan])})
  text = (tmp_path / "r.json").read_text()
  assert "NaN" not in text and "Infinity" not in text
  assert json.loads(text) == {"loss": None, "x": [None, 1.5], "arr": [1.0, None]}


def test_a_torn_last_metrics_line_is_skipped_and_cut_before_the_next_append(tmp_path):
  log = runio.MetricsLog(tmp_path / "metrics.jsonl")
  for step in (2, 4):
    log.append({"step": step, "train/loss": 1.0 / step})
  with open(log.path, "a") as f:
    f.write('{"step": 6, "train/lo')   # a crash mid-append
  assert [r["step"] for r in runio.read_metrics(log.path)] == [2, 4]
  resumed = runio.MetricsLog(log.path)
  resumed.append({"step": 6, "train/loss": 0.25})
  assert [r["step"] for r in runio.read_metrics(log.path)] == [2, 4, 6]
  assert log.path.read_text().count("\n") == 3
  resumed.truncate_after(4)
  assert [r["step"] for r in runio.read_metrics(log.path)] == [2, 4]
  resumed.truncate_after(0)
  assert runio.read_metrics(log.path) == []


def test_a_bad_line_before_the_last_is_an_error_not_silently_skipped(tmp_path):
  path = tmp_path / "metrics.jsonl"
  path.write_text('{"step": 2}\n{"step": 4, oops\n{"step": 6}\n')
  with pytest.raises(json.JSONDecodeError):
    runio.read_metrics(path)


_APPENDER = """
import sys
from mdm_jax import runio
log = runio.MetricsLog(sys.argv[1])
for i in range(200):
  log.append({"writer": int(sys.argv[2]), "i": i, "pad": "y" * (50 + 37 * (i % 7))})
"""


def test_concurrent_appenders_never_interleave_inside_a_line(tmp_path):
  path = tmp_path / "metrics.jsonl"
  procs = [subprocess.Popen([sys.executable, "-c", _APPENDER, str(path), str(w)]) for w in range(4)]
  assert [p.wait() for p in procs] == [0] * 4
  rows = runio.read_metrics(path)
  assert len(rows) == 800 and path.read_text().count("\n") == 800
  for w in range(4):
    assert [r["i"] for r in rows if r["writer"] == w] == list(range(200))


def test_run_log_lines_are_timestamped_and_appended(tmp_path):
  runio.log_line(tmp_path, "first")
  runio.log_line(tmp_path, "second")
  lines = (tmp_path / runio.RUN_LOG).read_text().splitlines()
  assert [line.split(" ", 1)[1] for line in lines] == ["first", "second"]
  assert all(time.strptime(line.split(" ", 1)[0], "%Y-%m-%dT%H:%M:%S%z") for line in lines)
  assert math.isfinite(os.path.getmtime(tmp_path / runio.RUN_LOG))
