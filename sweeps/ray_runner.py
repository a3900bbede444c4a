"""The Ray runner: each run is a Ray task with declared CPUs, on a local Ray or an existing cluster.

The driver (this process) owns the index: it claims runs, submits them, heartbeats their claims and records the
results, so Ray workers never open SQLite and need only the run directories (shared storage on a real cluster).
A Ray the lab starts itself follows shared/docs/DISTRIBUTED.md: every listener on 127.0.0.1
(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, set before `import ray`), no dashboard, no usage stats, auth disabled (it is
loopback only), a small object store and a private short temp dir removed at shutdown. Ray has no authentication:
`--ray-address` attaches to a cluster the user started and secured. A run with processes_per_run > 1 is one task
reserving all its CPUs that starts the jax.distributed ranks as local subprocesses (DISTRIBUTED.md §4, option 2).
"""
import contextlib
import os
import pathlib
import shutil
import tempfile
import traceback

from sweeps import execute
from sweeps.index import Index, Worker
from sweeps.runners import Runner, RunOptions, worker_env

# Passed to every task, so runs see the driver's platform, caches and (in tests) fault plan.
_FORWARDED_ENV = ("JAX_PLATFORMS", "MDM_LAB_CACHE", "MDM_LAB_FAULTS", "JAX_COMPILATION_CACHE_DIR",
                  "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "PYTHONPATH", "XLA_FLAGS", "MDM_LAB_PEAK_FLOPS",
                  "GLIBC_TUNABLES")   # huge pages for XLA's temp buffers (mdm_jax.hostmem), set by worker_env


def _quiet_local_env(loopback: bool):
  os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")     # otherwise on by default when non-interactive
  if loopback:
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")   # node IP 127.0.0.1: loopback listeners only
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")       # no token file in $HOME for a loopback-only Ray


@contextlib.contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None):
  """Use the Ray this process is already connected to, attach to `address`, or start a local loopback-only Ray
  (stopped again, with its temp dir, on exit). Yields the ray module."""
  loopback = address is None or address.split(":")[0] in ("127.0.0.1", "localhost", "auto")
  _quiet_local_env(loopback)
  import ray
  if loopback:   # read once at `import ray`: enforce it even if ray was imported before the variable was set
    from ray._private import ray_constants
    ray_constants.ENABLE_RAY_CLUSTER = False
  if ray.is_initialized():
    yield ray
    return
  tmp = None
  try:
    if address:
      ray.init(address=address, log_to_driver=False)
    else:
      tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")   # AF_UNIX socket paths must stay < 108 bytes
      ray.init(num_cpus=num_cpus, include_dashboard=False, object_store_memory=100 * 2**20, _temp_dir=tmp,
               log_to_driver=False)
    yield ray
  finally:
    if ray.is_initialized():
      ray.shutdown()
    if tmp:
      shutil.rmtree(tmp, ignore_errors=True)


def _ray_train(cfg_dict: dict, run_dir: str, run_id: str, processes: int) -> dict:
  """The task body: runs in a Ray worker process (reused across tasks, so compiled programs are reused too)."""
  from sweeps.execute import train_one
  return train_one(cfg_dict, run_dir, run_id, processes)


class RayRunner(Runner):
  name = "ray"

  def run(self, sweep_dir, opts: RunOptions):
    sweep_dir = pathlib.Path(sweep_dir).absolute()
    env = worker_env(sweep_dir)
    task_env = {k: env[k] for k in _FORWARDED_ENV if env.get(k)}
    cpus = opts.cpus_per_run * opts.processes_per_run
    with ray_session(opts.ray_address) as ray:
      task = ray.remote(_ray_train).options(num_cpus=cpus, max_retries=0, runtime_env={"env_vars": task_env})
      capacity = opts.workers or max(1, int(ray.cluster_resources().get("CPU", 1) // cpus))
      index = Index(sweep_dir, opts.stale_after)
      worker = Worker.here("ray")
      inflight: dict = {}
      claimed = 0
      try:
        with execute.Heartbeat(sweep_dir, worker, opts.heartbeat_every):
          while True:
            while len(inflight) < capacity and (not opts.max_runs or claimed < opts.max_runs):
              claims = index.claim(worker, 1)
              if not claims:
                break
              c, claimed = claims[0], claimed + 1
              run_dir = index.run_dir(c.run_id)
              index.event(c.run_id, worker, "start", f"ray; latest_checkpoint={execute.checkpoint_step(run_dir)}")
              inflight[task.remote(c.config, str(run_dir), c.run_id, opts.processes_per_run)] = c
            if not inflight:
              break
            ready, _ = ray.wait(list(inflight), num_returns=1)
            for ref in ready:
              c = inflight.pop(ref)
              try:
                outcome = ray.get(ref)
              except Exception as e:   # noqa: BLE001 - a lost worker or task error is a failed run, not a crash
                cause = getattr(e, "cause", None) or e
                tb = "".join(traceback.format_exception(type(cause), cause, cause.__traceback__)) + str(e)
                outcome = execute.record_failure(index.run_dir(c.run_id), c.config, c.run_id, tb)
              index.finish(c.run_id, worker, outcome["status"], outcome.get("step"), outcome.get("final"),
                           outcome.get("error"))
      except KeyboardInterrupt:
        for ref, c in inflight.items():
          ray.cancel(ref, force=True)
          index.finish(c.run_id, worker, "interrupted")   # resumes from its last checkpoint next time
        raise
      finally:
        index.close()
