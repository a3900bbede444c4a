"""Export a sweep's metrics to TensorBoard: one event-file directory per run (tensorboardX), named by run id.

Every numeric key of metrics.jsonl becomes a scalar at its step; the grid point and status go in as text and as
hparams, so TensorBoard's HParams tab compares runs. Only the documented run-directory files are read.
"""
import json
import math
import pathlib

from mdm_jax import runio
from mdm_jax.errors import UserError


def export_tensorboard(sweep_dir, out_dir) -> int:
  """Write OUT/<run_id>/events.* for every run that has metrics; returns the number of runs exported."""
  from tensorboardX import SummaryWriter
  sweep_dir, out_dir = pathlib.Path(sweep_dir), pathlib.Path(out_dir)
  runs = sorted(p for p in (sweep_dir / "runs").glob("*") if (p / runio.RUN_JSON).is_file())
  if not runs:
    raise UserError(str(sweep_dir), "no runs to export (no runs/<id>/run.json)", "give a sweep directory")
  points = _points(sweep_dir)
  exported = 0
  for run_dir in runs:
    run = runio.read_json(run_dir / runio.RUN_JSON)
    rows = runio.read_metrics(run_dir / runio.METRICS)
    if not rows:
      continue
    writer = SummaryWriter(logdir=str(out_dir / run_dir.name))
    try:
      for row in rows:
        step = int(row.get("step", 0))
        for key, value in row.items():
          if key != "step" and isinstance(value, (int, float)) and math.isfinite(value):
            writer.add_scalar(key, value, step, walltime=None)
      point = points.get(run_dir.name, {})
      writer.add_text("run", f"status: {run.get('status')}\n\npoint: {json.dumps(point)}\n\n"
                      f"config: {json.dumps(run.get('config'), sort_keys=True)}", 0)
      hparams = {k: (v if isinstance(v, (int, float, str, bool)) else json.dumps(v)) for k, v in point.items()}
      final = {f"final/{k}": v for k, v in (run.get("final") or {}).items()
               if k in ("train/loss", "eval/loss") and isinstance(v, (int, float))}
      if hparams and final:
        writer.add_hparams(hparams, final, name="hparams")
    finally:
      writer.close()
    exported += 1
  return exported


def _points(sweep_dir: pathlib.Path) -> dict:
  """run_id -> grid point, from the index when there is one."""
  if not (sweep_dir / "index.sqlite").exists():
    return {}
  from sweeps.index import Index
  index = Index(sweep_dir)
  try:
    return {r["run_id"]: json.loads(r["point"] or "{}") for r in index.rows()}
  finally:
    index.close()
