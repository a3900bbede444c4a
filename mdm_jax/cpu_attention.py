"""Attention's core on CPU through OpenBLAS (`kernels/attention_cpu.cc`, an XLA FFI custom call), built on first use.

XLA:CPU runs attention's batched dots at about half the rate OpenBLAS reaches on the same shapes (benchmarks/README.md).
The kernel is compiled once per machine and jaxlib into the cache (`$MDM_LAB_CACHE/kernels`, g++ and the
`scipy-openblas32` wheel's headers) and registered with XLA. `available()` is False, with the reason in
`unavailable_reason()`, where it cannot be built (no compiler, no wheel, not x86-64/aarch64 Linux); `ops.attention` then
keeps XLA's dots, so every platform runs the same model. Set `MDM_LAB_CPU_ATTENTION=0` to force XLA's dots.
"""
import contextlib
import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp

from mdm_jax.data import text   # the lab's cache root (MDM_LAB_CACHE)

_SOURCE = Path(__file__).parent / "kernels" / "attention_cpu.cc"
_TARGETS = {"mdm_attention_fwd": "MdmAttentionForward", "mdm_attention_bwd": "MdmAttentionBackward"}


def _cpu_flags() -> str:
  """The instruction sets the build is for (it uses -march=native): part of the cache key."""
  try:
    with open("/proc/cpuinfo") as f:
      return next((line for line in f if line.startswith(("flags", "Features"))), "")
  except OSError:
    return platform.processor()


def _build() -> Path:
  """The shared library, compiled into the cache unless a build for this source, jaxlib and CPU is there."""
  import scipy_openblas32 as blas   # a dependency on Linux; imported here so that other platforms import this module
  compiler = shutil.which(os.environ.get("CXX", "g++"))
  if compiler is None:
    raise OSError("no C++ compiler (g++, or $CXX) on PATH")
  key = hashlib.sha256(b"\0".join([_SOURCE.read_bytes(), jax.ffi.include_dir().encode(), jax.__version__.encode(),
                                   blas.get_lib_dir().encode(), _cpu_flags().encode()])).hexdigest()[:16]
  lib = text.cache_dir() / "kernels" / f"attention_cpu-{key}.so"
  if lib.exists():
    return lib
  lib.parent.mkdir(parents=True, exist_ok=True)
  logging.getLogger(__name__).info("building %s (once per machine and jaxlib) into %s", _SOURCE.name, lib.parent)
  with tempfile.TemporaryDirectory(dir=lib.parent) as tmp:
    obj, out = Path(tmp) / "a.o", Path(tmp) / "a.so"
    # -ffast-math for the compile only (libmvec's vector expf): linked with it, the library would set flush-to-zero
    # for the whole process when loaded.
    _run([compiler, "-O3", "-ffast-math", "-march=native", "-std=c++17", "-fPIC", "-w", f"-I{jax.ffi.include_dir()}",
          f"-I{blas.get_include_dir()}", "-c", str(_SOURCE), "-o", str(obj)])
    _run([compiler, "-shared", str(obj), f"-L{blas.get_lib_dir()}", f"-l{blas.get_library()}",
          f"-Wl,-rpath,{blas.get_lib_dir()}", *(["-lmvec"] if platform.machine() == "x86_64" else []), "-o", str(out)])
    os.replace(out, lib)   # atomic: concurrent builders (pytest-xdist workers, sweep processes) never see half a file
  return lib


def _run(cmd: list) -> None:
  done = subprocess.run(cmd, capture_output=True, text=True)
  if done.returncode != 0:
    raise OSError(f"building {_SOURCE.name} failed: {done.stderr.strip().splitlines()[-1:]}")


@functools.cache
def _load() -> str | None:
  """Builds and registers the kernel once per process; the reason it is unavailable, or None."""
  if os.environ.get("MDM_LAB_CPU_ATTENTION", "1") == "0":
    return "MDM_LAB_CPU_ATTENTION=0"
  if platform.system() != "Linux" or platform.machine() not in ("x86_64", "aarch64"):
    return f"built for Linux on x86-64/aarch64 only, not {platform.system()} {platform.machine()}"
  try:
    lib = ctypes.CDLL(str(_build()))
  except (OSError, ImportError) as e:
    warnings.warn(f"the CPU attention kernel is unavailable ({e}); attention runs on XLA's slower dots", stacklevel=2)
    return str(e)
  lib.MdmAttentionInit()
  for target, symbol in _TARGETS.items():
    jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, symbol)), platform="cpu")
  return None


def unavailable_reason() -> str | None:
  return _load()


_xla_only = False


def available() -> bool:
  """True when the kernel is built and registered, the default backend is CPU and `xla_only` is not in force."""
  return not _xla_only and jax.default_backend() == "cpu" and _load() is None


@contextlib.contextmanager
def xla_only():
  """Programs traced inside keep XLA's dots (FLOP counts by cost analysis, which cannot see into the kernel; A/Bs)."""
  global _xla_only
  before, _xla_only = _xla_only, True
  try:
    yield
  finally:
    _xla_only = before


def _require() -> None:
  if (reason := _load()) is not None:
    raise RuntimeError(f"the CPU attention kernel is unavailable: {reason}")


def forward(q_h, k_h, v):
  """(out [.., L, H, Dh], probs [.., H, L, L]) of softmax(q_h·k_hᵀ)·v; q_h, k_h [.., H, L, Dh], v [.., L, H, Dh]."""
  _require()
  *batch, h, l, dh = q_h.shape
  shapes = (jax.ShapeDtypeStruct(v.shape, jnp.float32), jax.ShapeDtypeStruct((*batch, h, l, l), jnp.float32))
  return jax.ffi.ffi_call("mdm_attention_fwd", shapes, vmap_method="broadcast_all")(q_h, k_h, v)


def backward(probs, q_h, k_h, v, out, d_out):
  """(d_q_h, d_k_h, d_v) of `forward`, given its probs and out and the output's gradient d_out [.., L, H, Dh]."""
  _require()
  shapes = tuple(jax.ShapeDtypeStruct(x.shape, jnp.float32) for x in (q_h, k_h, v))
  return jax.ffi.ffi_call("mdm_attention_bwd", shapes, vmap_method="broadcast_all")(probs, q_h, k_h, v, out, d_out)
