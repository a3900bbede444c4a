"""Test-session defaults: CPU only, a private cache for tokenizers, quiet JAX."""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
  """Tokenizers and encoded corpora are cached per test session (never in the user's ~/.cache)."""
  if "MDM_LAB_CACHE" not in os.environ:
    os.environ["MDM_LAB_CACHE"] = str(tmp_path_factory.mktemp("mdm-lab-cache"))
  yield


@pytest.fixture(scope="session")
def compile_cache(tmp_path_factory):
  """A persistent JAX compile cache for the session, also inherited by the worker/rank processes tests start."""
  if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = str(tmp_path_factory.mktemp("jax-cache"))
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
  import jax   # pylint: disable=import-outside-toplevel
  jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  return os.environ["JAX_COMPILATION_CACHE_DIR"]


def pytest_xdist_auto_num_workers(config):
  """`-n auto`: one worker per usable core, at most one per 3 GiB of RAM (a worker peaks near 2 GiB)."""
  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
  ram_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
  return max(1, min(cores, int(ram_gib // 3)))
