"""One training run as a multi-process jax.distributed job on this host (shared/docs/DISTRIBUTED.md §3).

`train_local(cfg, run_dir, n)` starts n rank processes (`python -m mdm_jax.distributed rank ...`), each of which
calls `initialize` before anything touches a JAX backend and then runs the ordinary `train` on the global mesh;
only rank 0 writes run.json and metrics (see mdm_jax.runlog). The coordinator binds 127.0.0.1 only, timeouts are
short (a dead peer aborts the others in ~15 s instead of 100 s), and jax.distributed failures abort processes
rather than raise, so ranks always run as subprocesses with a wall-clock timeout and are killed in `finally`.
"""
import argparse
import json
import os
import pathlib
import socket
import subprocess
import sys
import time

from mdm_jax import hostmem

LOOPBACK = "127.0.0.1"


def free_port() -> int:
  """A free loopback TCP port; pick it right before launching (a taken coordinator port segfaults rank 0)."""
  with socket.socket() as s:
    s.bind((LOOPBACK, 0))
    return s.getsockname()[1]


def initialize(coordinator: str, num_processes: int, process_id: int, local_cpu_devices: int = 0,
               init_timeout: int = 60, heartbeat_timeout: int = 15) -> None:
  """jax.distributed.initialize for a local job: must run before any JAX computation in this process."""
  import jax
  if local_cpu_devices:
    jax.config.update("jax_num_cpu_devices", local_cpu_devices)
  kwargs = {}
  if coordinator.split(":")[0] in (LOOPBACK, "localhost"):
    kwargs["coordinator_bind_address"] = coordinator   # default binds [::]:PORT, i.e. every interface
  jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes, process_id=process_id,
                             initialization_timeout=init_timeout, heartbeat_timeout_seconds=heartbeat_timeout,
                             **kwargs)


def launch_local(rank_argv, num_processes: int, logs: list[pathlib.Path], timeout: float,
                 env: dict | None = None) -> list[int]:
  """Start `rank_argv(rank, port)` for every rank with a fresh port, wait for all, return their exit codes.
  If rank 0 dies on a port taken in the meantime (SIGSEGV) the whole group is retried once with a new port."""
  for attempt in range(2):
    port = free_port()
    procs, files = [], []
    try:
      for rank in range(num_processes):
        files.append(open(logs[rank], "ab"))
        procs.append(subprocess.Popen(rank_argv(rank, port), stdout=files[-1], stderr=subprocess.STDOUT,
                                      env=hostmem.child_env(env)))
      deadline = time.monotonic() + timeout
      for p in procs:
        p.wait(timeout=max(deadline - time.monotonic(), 1))
      codes = [p.returncode for p in procs]
    except subprocess.TimeoutExpired:
      codes = [p.poll() if p.poll() is not None else -9 for p in procs]
    finally:
      for p in procs:   # never leave a half-dead group behind
        if p.poll() is None:
          p.kill()
          p.wait()
      for f in files:
        f.close()
    if not (codes[0] == -11 and attempt == 0):
      return codes
  return codes


def train_local(cfg, run_dir, num_processes: int, local_cpu_devices: int = 1, timeout: float = 3600):
  """Train `cfg` in `run_dir` as a jax.distributed job of `num_processes` local processes; returns the RunResult
  read back from run.json (raises RuntimeError with the ranks' log tails if any rank failed)."""
  from mdm_jax import runio
  from mdm_jax.train import RunResult
  run_dir = pathlib.Path(run_dir)
  run_dir.mkdir(parents=True, exist_ok=True)
  config_path = run_dir / "distributed_config.json"
  runio.write_json_atomic(config_path, cfg.to_dict())
  logs = [run_dir / f"rank{r}.log" for r in range(num_processes)]
  env = dict(os.environ)
  root = str(pathlib.Path(__file__).resolve().parent.parent)
  env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
  argv = lambda rank, port: [sys.executable, "-m", "mdm_jax.distributed", "rank", "--config", str(config_path),
                             "--out", str(run_dir), "--coordinator", f"{LOOPBACK}:{port}",
                             "--num-processes", str(num_processes), "--process-id", str(rank),
                             "--local-cpu-devices", str(local_cpu_devices)]
  codes = launch_local(argv, num_processes, logs, timeout, env)
  if any(codes):
    tails = "\n".join(f"--- rank {r} (exit {c}) ---\n" + _tail(logs[r]) for r, c in enumerate(codes))
    raise RuntimeError(f"distributed run failed with exit codes {codes}\n{tails}")
  run = runio.read_json(run_dir / runio.RUN_JSON)
  return RunResult(run["status"], run.get("step", 0), run.get("final") or {}, run_dir)


def _tail(path: pathlib.Path, lines: int = 30) -> str:
  try:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
  except OSError:
    return "(no log)"


def _rank_main(args) -> int:
  if args.local_cpu_devices and os.environ.get("JAX_PLATFORMS", "cpu") == "cpu":
    import jax
    jax.config.update("jax_platforms", "cpu")
  initialize(args.coordinator, args.num_processes, args.process_id, args.local_cpu_devices)
  import jax
  from mdm_jax.config import from_dict
  from mdm_jax.train import train
  cfg = from_dict(json.loads(pathlib.Path(args.config).read_text()))
  result = train(cfg, args.out, progress=False)
  print(f"[rank {args.process_id}/{jax.process_count()}] {result.status} at step {result.step} on "
        f"{jax.device_count()} devices", flush=True)
  jax.distributed.shutdown()
  return 0 if result.status in ("done", "diverged") else 1


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="python -m mdm_jax.distributed")
  sub = p.add_subparsers(dest="command", required=True)
  r = sub.add_parser("rank", help="one rank of a local jax.distributed training job")
  r.add_argument("--config", required=True, help="resolved config JSON")
  r.add_argument("--out", required=True, help="run directory")
  r.add_argument("--coordinator", required=True, help="HOST:PORT of rank 0's coordinator")
  r.add_argument("--num-processes", type=int, required=True)
  r.add_argument("--process-id", type=int, required=True)
  r.add_argument("--local-cpu-devices", type=int, default=0, help="CPU devices per process (0: leave as is)")
  args = p.parse_args(argv)
  return _rank_main(args)


if __name__ == "__main__":
  sys.exit(main())
