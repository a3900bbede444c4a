"""Run a sweep from Python: the same path as `mdm-lab sweep run`, for labs and notebooks.

    counts = run_sweep("spec.yaml", "out/sweep", runner="vmap")   # resumable: finished runs are not touched
"""
import dataclasses
import pathlib

from mdm_jax import runio
from sweeps.index import Index
from sweeps.plan import make_plan
from sweeps.progress import LiveBar, status_report
from sweeps.runners import RunOptions, get_runner
from sweeps.spec import Spec, load_spec


def register_spec(spec: Spec, out, retries: int | None = None, stale_after: float = 120.0) -> tuple[int, int, dict]:
  """Adds the spec's planned runs to OUT's index (runs already there keep their status); (planned, new, counts)."""
  plan = make_plan(spec)
  out = pathlib.Path(out)
  index = Index(out, stale_after)
  try:
    new = index.add_runs(plan.runs)
    index.set_meta(retries=spec.retries if retries is None else retries, name=spec.name)
    runio.write_text_atomic(out / "spec.yaml", spec.text)
    return len(plan.runs), new, index.counts()
  finally:
    index.close()


def counts(out) -> dict:
  index = Index(out)
  try:
    return index.counts()
  finally:
    index.close()


def run_sweep(spec: Spec | str | pathlib.Path, out, runner: str = "inprocess", opts: RunOptions | None = None,
              retries: int | None = None, progress: bool = True, quiet: bool = False) -> dict:
  """Plans SPEC into OUT, runs what is unfinished with RUNNER, and returns the index's counts by status.

  In OPTS, 0 means the default: workers 2 for the processes runner (ray: the cluster's CPUs), CPUs and processes
  per run from the spec's `resources`."""
  spec = spec if isinstance(spec, Spec) else load_spec(spec)
  opts = opts or RunOptions(workers=0, cpus_per_run=0, processes_per_run=0)
  opts = dataclasses.replace(opts, workers=opts.workers or (2 if runner == "processes" else 0),
                             cpus_per_run=opts.cpus_per_run or spec.resources["cpus_per_run"],
                             processes_per_run=opts.processes_per_run or spec.resources["processes_per_run"])
  planned, new, before = register_spec(spec, out, retries, opts.stale_after)
  if not quiet:
    print(f"{out}: {planned} planned runs ({new} new); "
          + ", ".join(f"{k} {v}" for k, v in before.items()))
  with LiveBar(pathlib.Path(out), enabled=progress):
    get_runner(runner).run(pathlib.Path(out), opts)
  if not quiet:
    print(status_report(out))
  return counts(out)
