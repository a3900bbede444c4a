"""A sweep worker process: `python -m sweeps.worker SWEEP_DIR [--mode inprocess|vmap] ...`.

Started by the processes runner (or by hand, on any host sharing SWEEP_DIR); claims runs from the index until
nothing is runnable. SIGTERM makes the current run checkpoint and release its claim.
"""
import argparse
import os
import sys


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="python -m sweeps.worker")
  p.add_argument("sweep_dir")
  p.add_argument("--mode", choices=("inprocess", "vmap"), default="inprocess")
  p.add_argument("--group-size", type=int, default=8)
  p.add_argument("--processes-per-run", type=int, default=1)
  p.add_argument("--stale-after", type=float, default=120.0)
  p.add_argument("--heartbeat-every", type=float, default=10.0)
  p.add_argument("--cpus", default=None, help="pin this worker to these CPU ids (comma list) before jax starts")
  args = p.parse_args(argv)
  if args.cpus:
    os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})   # XLA sizes its thread pool from this
  from sweeps.runners import RunOptions, get_runner
  opts = RunOptions(group_size=args.group_size, processes_per_run=args.processes_per_run,
                    stale_after=args.stale_after, heartbeat_every=args.heartbeat_every)
  get_runner(args.mode).run(args.sweep_dir, opts)
  return 0


if __name__ == "__main__":
  sys.exit(main())
