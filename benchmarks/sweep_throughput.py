"""Sweep throughput: runs/minute for tiny runs executed three ways, measured in one invocation.

  python benchmarks/sweep_throughput.py [--runs 32] [--steps 200] [--process-runs 4] [--inprocess-runs 8]
                                        [--group-size 16] [--processes-runs 16] [--out DIR]

The runs (issue 5 "Benchmark"): d=64, 2 layers, seq 64, logical batch 8, `--steps` steps, differing in LR and seed
(one shape), each writing its full run directory (metrics, one eval and one checkpoint at the end):
  process-per-run  `mdm-lab train` in a fresh Python process per run (import + compile + train each time; no
                   persistent compile cache), timed over --process-runs runs;
  inprocess        the sweep's in-process runner (one compiled program reused), over --inprocess-runs runs;
  vmap             the sweep's vmap runner, groups of --group-size runs as one program, over all --runs runs;
  processes        the sweep's processes runner: 2 worker processes, each pinned to its share of the CPUs, sharing a
                   persistent compile cache, over --processes-runs runs.
Each mode includes its own compile time. Prints one JSON line per mode (runner, runs, seconds, runs_per_min,
per-run compute seconds, load average before/after: the machine may be shared), then a summary line with the
ratios and the targets (vmap >= 100 runs/min and >= 10x process-per-run).
"""
import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run as a script from anywhere

BASE = {"model.d_model": 64, "model.n_layers": 2, "model.n_heads": 1, "model.d_ff": 256, "data.seq_len": 64,
        "batch.logical": 8, "batch.physical": 8, "train.log_every": 50, "train.eval_batches": 1,
        "train.peak_flops": 1e11}


def _spec(path: pathlib.Path, runs: int, steps: int) -> pathlib.Path:
  import yaml
  seeds = max(1, runs // 8)
  lrs = [round(1e-3 * 1.5 ** i, 8) for i in range(runs // seeds)]
  spec = {"name": "throughput", "base": "tiny",
          "set": {**BASE, "train.steps": steps, "train.eval_every": steps, "train.checkpoint_every": steps},
          "grid": {"lr": lrs, "seed": list(range(seeds))}}
  path.write_text(yaml.safe_dump(spec))
  return path


def _line(runner: str, runs: int, seconds: float, load0, extra: dict | None = None) -> dict:
  row = {"runner": runner, "runs": runs, "seconds": round(seconds, 2), "runs_per_min": round(60 * runs / seconds, 3),
         "seconds_per_run": round(seconds / runs, 3), "loadavg_before": [round(x, 2) for x in load0],
         "loadavg_after": [round(x, 2) for x in os.getloadavg()], "cpu_count": os.cpu_count(), **(extra or {})}
  print(json.dumps(row), flush=True)
  return row


def process_per_run(plan, n: int, work: pathlib.Path) -> dict:
  env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}   # fresh: nothing cached
  root = str(pathlib.Path(__file__).resolve().parent.parent)
  env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
  load0, t0 = os.getloadavg(), time.perf_counter()
  for i, run in enumerate(plan.runs[:n]):
    config = work / f"proc{i}.json"
    config.write_text(json.dumps(run.cfg.to_dict()))
    subprocess.run([sys.executable, "-m", "labs.cli", "train", str(config), "--out", str(work / f"proc{i}"),
                    "--no-progress"], env=env, check=True, capture_output=True)
  return _line("process-per-run", n, time.perf_counter() - t0, load0, {"compile_cache": False})


def with_runner(name: str, plan, n: int, work: pathlib.Path, group_size: int, workers: int = 2) -> dict:
  from sweeps.index import Index
  from sweeps.runners import RunOptions, get_runner
  sweep = work / name
  index = Index(sweep)
  index.add_runs(plan.runs[:n])
  index.close()
  load0, t0 = os.getloadavg(), time.perf_counter()
  get_runner(name).run(sweep, RunOptions(group_size=group_size, workers=workers))
  seconds = time.perf_counter() - t0
  index = Index(sweep)
  counts = index.counts()
  index.close()
  assert counts["done"] == n, counts
  extra = {"group_size": group_size} if name == "vmap" else {"workers": workers} if name == "processes" else None
  return _line(name, n, seconds, load0, extra)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--runs", type=int, default=32)
  p.add_argument("--steps", type=int, default=200)
  p.add_argument("--process-runs", type=int, default=4, help="runs timed for process-per-run (0 skips it)")
  p.add_argument("--inprocess-runs", type=int, default=8, help="runs timed for the in-process runner")
  p.add_argument("--group-size", type=int, default=16)
  p.add_argument("--processes-runs", type=int, default=16,
                 help="runs timed for the processes runner (2 workers, one pinned per core share; 0 skips it)")
  p.add_argument("--out", default=None, help="work directory (default: a temporary one, removed at the end)")
  args = p.parse_args(argv)
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  work = pathlib.Path(args.out or tempfile.mkdtemp(prefix="sweep-throughput-"))
  work.mkdir(parents=True, exist_ok=True)
  try:
    from sweeps.plan import make_plan
    from sweeps.spec import load_spec
    plan = make_plan(load_spec(_spec(work / "spec.yaml", args.runs, args.steps)))
    rows = {}
    if args.process_runs:
      rows["process"] = process_per_run(plan, min(args.process_runs, args.runs), work)
    rows["inprocess"] = with_runner("inprocess", plan, min(args.inprocess_runs, args.runs), work, 1)
    rows["vmap"] = with_runner("vmap", plan, args.runs, work, args.group_size)
    if args.processes_runs:
      rows["processes"] = with_runner("processes", plan, min(args.processes_runs, args.runs), work, 1)
    vmap, per_min = rows["vmap"]["runs_per_min"], {k: r["runs_per_min"] for k, r in rows.items()}
    summary = {"runner": "summary", "vmap_runs_per_min": vmap,
               "vmap_over_inprocess": round(vmap / rows["inprocess"]["runs_per_min"], 2),
               "vmap_over_process_per_run": round(vmap / rows["process"]["runs_per_min"], 2) if "process" in rows
               else None, "target_runs_per_min": 100, "target_over_process_per_run": 10,
               "train_flops_per_run": plan.runs[0].flops, "steps": args.steps,
               "processes_over_inprocess": round(per_min["processes"] / per_min["inprocess"], 2)
               if "processes" in rows else None}
    print(json.dumps(summary), flush=True)
  finally:
    if not args.out:
      shutil.rmtree(work, ignore_errors=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
