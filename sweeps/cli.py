"""`mdm-lab sweep plan|run|status|export`: plan a grid, run it resumably on any runner, watch it, export it."""
import argparse

RUNNERS = ("inprocess", "vmap", "processes", "ray")


def register(subparsers) -> None:
  p = subparsers.add_parser("sweep", help="plan, run, watch and export sweeps of training runs")
  sub = p.add_subparsers(dest="sweep_command", required=True)

  plan = sub.add_parser("plan", help="print a sweep's runs, counts, FLOPs and estimated time (runs nothing)")
  plan.add_argument("spec", help="sweep spec (YAML)")
  plan.add_argument("--no-probe", action="store_true", help="skip the measured timing probe")
  plan.add_argument("--probe-steps", type=int, default=3, help="train steps timed per probed shape")
  plan.set_defaults(func=_plan)

  run = sub.add_parser("run", help="run (or resume) a sweep: finishes only what is unfinished")
  run.add_argument("spec", help="sweep spec (YAML)")
  run.add_argument("--out", required=True, help="sweep directory: index.sqlite + runs/<run_id>/")
  run.add_argument("--runner", choices=RUNNERS, default="inprocess")
  run.add_argument("--workers", type=int, default=None,
                   help="processes: worker processes (default 2); ray: runs in flight (default: cluster CPUs)")
  run.add_argument("--worker-mode", choices=("inprocess", "vmap"), default="inprocess",
                   help="processes runner: what each worker does")
  run.add_argument("--group-size", type=int, default=8, help="vmap: runs trained together as one program")
  run.add_argument("--ray-address", default=None, help="attach to an existing Ray cluster instead of a local one")
  run.add_argument("--cpus-per-run", type=float, default=None, help="ray: CPUs declared per run")
  run.add_argument("--processes-per-run", type=int, default=None,
                   help="run each training job as a jax.distributed job of this many local processes")
  run.add_argument("--retries", type=int, default=None, help="retries of a failed run (default: spec, else 1)")
  run.add_argument("--stale-after", type=float, default=120.0, help="seconds before a silent claim is taken over")
  run.add_argument("--no-progress", action="store_true", help="no live progress bar")
  run.set_defaults(func=_run)

  status = sub.add_parser("status", help="counts by status, running and failed runs of a sweep directory")
  status.add_argument("dir", help="sweep directory")
  status.add_argument("--runs", action="store_true", help="also list every run")
  status.set_defaults(func=_status)

  export = sub.add_parser("export", help="export a sweep's metrics")
  export.add_argument("dir", help="sweep directory")
  export.add_argument("--tensorboard", required=True, metavar="OUT", help="write TensorBoard event files here")
  export.set_defaults(func=_export)


def _positive(value, name: str):
  from mdm_jax.errors import UserError
  if value is not None and value <= 0:
    raise UserError(name, f"must be > 0, got {value}")


def _plan(args: argparse.Namespace) -> int:
  from sweeps.plan import make_plan, probe, table
  from sweeps.spec import load_spec
  _positive(args.probe_steps, "--probe-steps")
  plan = make_plan(load_spec(args.spec))
  estimate = None if args.no_probe else probe(plan, steps=args.probe_steps)
  print(table(plan, estimate))
  return 0


def _run(args: argparse.Namespace) -> int:
  from sweeps.launch import run_sweep
  from sweeps.runners import RunOptions
  for name in ("workers", "group_size", "cpus_per_run", "processes_per_run", "stale_after"):
    _positive(getattr(args, name), "--" + name.replace("_", "-"))
  opts = RunOptions(workers=args.workers or 0, group_size=args.group_size,
                    worker_mode=args.worker_mode, ray_address=args.ray_address, cpus_per_run=args.cpus_per_run or 0,
                    processes_per_run=args.processes_per_run or 0, stale_after=args.stale_after)
  counts = run_sweep(args.spec, args.out, args.runner, opts, retries=args.retries, progress=not args.no_progress)
  return 1 if counts["failed"] else 0


def _status(args: argparse.Namespace) -> int:
  import pathlib
  from mdm_jax.errors import UserError
  from sweeps.progress import status_report
  if not (pathlib.Path(args.dir) / "index.sqlite").is_file():
    raise UserError(args.dir, "not a sweep directory (no index.sqlite)", "give the --out of `mdm-lab sweep run`")
  print(status_report(args.dir, show_runs=args.runs))
  return 0


def _export(args: argparse.Namespace) -> int:
  from sweeps.export import export_tensorboard
  n = export_tensorboard(args.dir, args.tensorboard)
  print(f"exported {n} runs to {args.tensorboard} (tensorboard --logdir {args.tensorboard})")
  return 0
