"""Huge pages for XLA:CPU's per-step temp buffer (glibc's `glibc.malloc.hugetlb=1` tunable).

XLA:CPU allocates a compiled step's temp buffer (640 MiB for the small benchmark model) with one fresh mmap per
execution and unmaps it afterwards, so every step first-touches it again: one page fault per 4 KiB page, 14 % of
the small step's CPU time under `perf`. With the tunable, glibc advises transparent huge pages for its mmapped
chunks (the kernel's THP mode "madvise" honours that): 512× fewer faults, the same peak RSS
(benchmarks/README.md has the measurements). glibc reads tunables only at process start, so the `mdm-lab` command
re-executes itself once with the tunable set, and every launcher of worker processes (sweeps' process runner, Ray
tasks, jax.distributed ranks, the benchmark harness) passes `child_env()`. Notebooks: start Jupyter with
`GLIBC_TUNABLES=glibc.malloc.hugetlb=1` in its environment. `MDM_LAB_HUGEPAGES=0` turns all of this off.

Standard library only: the CLI calls this before anything heavy is imported.
"""
import os
import pathlib
import platform
import sys

TUNABLE = "glibc.malloc.hugetlb=1"
OPT_OUT = "MDM_LAB_HUGEPAGES"          # "0" disables the tunable everywhere
_THP_MODE = pathlib.Path("/sys/kernel/mm/transparent_hugepage/enabled")


def thp_mode() -> str | None:
  """The kernel's transparent-huge-page mode ("always", "madvise", "never") or None when there is none."""
  try:
    text = _THP_MODE.read_text()
  except OSError:
    return None
  return text[text.index("[") + 1:text.index("]")] if "[" in text else None


def wanted(env=None) -> bool:
  """True where the tunable can help: Linux with glibc, THP not "never", and not opted out."""
  env = os.environ if env is None else env
  return (env.get(OPT_OUT, "1") != "0" and sys.platform == "linux" and platform.libc_ver()[0] == "glibc"
          and thp_mode() in ("always", "madvise"))


def active(env=None) -> bool:
  """Whether `env` (default: this process's) carries the tunable. glibc only reads it at start, so for this
  process it tells whether the tunable took effect."""
  env = os.environ if env is None else env
  return TUNABLE in env.get("GLIBC_TUNABLES", "").split(":")


def with_tunable(env: dict) -> dict:
  """A copy of `env` with the tunable added to GLIBC_TUNABLES (other tunables kept; a hugetlb value set by the
  user is kept too)."""
  out = dict(env)
  items = [t for t in out.get("GLIBC_TUNABLES", "").split(":") if t]
  if not any(t.startswith("glibc.malloc.hugetlb=") for t in items):
    out["GLIBC_TUNABLES"] = ":".join(items + [TUNABLE])
  return out


def child_env(env=None) -> dict:
  """The environment for a worker process: `env` (default: this process's) plus the tunable where wanted."""
  env = dict(os.environ if env is None else env)
  return with_tunable(env) if wanted(env) else env


def reexec_with_tunable() -> None:
  """Replace this process by the same command line with the tunable set, once; a no-op where not wanted or when
  the tunable is already present (also after the re-exec, so it cannot loop). Call it before importing jax."""
  env = with_tunable(os.environ)
  if not sys.executable or not wanted() or env == dict(os.environ):
    return
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


def release_free_memory() -> bool:
  """Return the C heap's free pages to the OS (glibc `malloc_trim`); True where that ran. After XLA compiles a
  large program its freed working memory stays resident; trimming before the first execution keeps it out of the
  step's peak RSS (−160 MiB on the small benchmark model)."""
  if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
    return False
  import ctypes
  ctypes.CDLL("libc.so.6").malloc_trim(0)
  return True
