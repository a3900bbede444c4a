"""Finished run directories in the trainer's format (run.json) for planned runs, with losses from a known law, so
lab logic (ordering, tables, fits) is tested without training. Shared by the isoflop and mixing lab tests."""
import json
import pathlib

from labs import common
from mdm_jax import flops
from sweeps.plan import make_plan

MODALITIES = ("text", "image", "audio")


def write_runs(sweep_dir: pathlib.Path, spec, losses) -> list[str]:
  """Writes SWEEP_DIR/runs/<id>/run.json for every planned run of SPEC not already there; LOSSES(cfg, N, D) gives
  {modality: loss} (eval/loss is their mean). Returns the ids written."""
  written = []
  for r in make_plan(spec).runs:
    run_dir = pathlib.Path(sweep_dir) / "runs" / r.run_id
    if (run_dir / "run.json").is_file():
      continue
    counts = flops.param_counts(r.cfg.model, r.cfg.vocab_size)
    tokens = r.cfg.total_steps * r.cfg.tokens_per_step
    by_modality = losses(r.cfg, counts["total"], tokens)
    final = {"step": r.cfg.total_steps, "tokens": tokens, "flops": r.flops,
             "eval/loss": sum(by_modality.values()) / len(by_modality),
             **{f"eval/loss/{m}": v for m, v in by_modality.items()}}
    run = {"run_id": r.run_id, "status": "done", "config": json.loads(json.dumps(r.cfg.to_dict())), "params": counts,
           "flops": {"train_per_token": flops.train_flops_per_token(r.cfg), "convention": "noncausal",
                     "budget": r.flops}, "tokens_planned": tokens, "final": final, "wall_time": 1.0}
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps(run))
    written.append(r.run_id)
  return written


class SyntheticContext(common.LabContext):
  """A LabContext whose sweeps write synthetic finished runs and log (name, budgets, prediction on disk) per call."""

  def __init__(self, *args, losses, **kw):
    super().__init__(*args, **kw)
    self.losses, self.calls = losses, []

  def sweep(self, name, spec):
    plan = make_plan(spec)
    self.calls.append({"name": name, "budgets": sorted({r.budget for r in plan.runs}),
                       "prediction_on_disk": (self.out / "prediction.json").is_file()})
    write_runs(self.sweep_dir(name), spec, self.losses)
    return self.sweep_dir(name)
