"""What run.json records about a run: resolved config, parameter counts, FLOPs, data, versions and hardware."""
import importlib.metadata
import os
import platform
import sys
import time

import jax

from mdm_jax import flops, model
from mdm_jax.config import Config

_PACKAGES = ("mdm-lab", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "grain", "numpy", "tokenizers")


def versions() -> dict[str, str]:
  out = {"python": sys.version.split()[0]}
  for name in _PACKAGES:
    try:
      out[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      out[name] = "not installed"
  return out


def hardware(mesh=None) -> dict:
  dev = jax.devices()[0]
  info = {"platform": dev.platform, "device_kind": dev.device_kind, "device_count": jax.device_count(),
          "process_count": jax.process_count(), "cpu_count": os.cpu_count(), "machine": platform.machine(),
          "processor": platform.processor() or platform.machine()}
  if mesh is not None:
    info["mesh"] = dict(mesh.shape)
  return info


def run_record(cfg: Config, source, hyper: dict, peak: float, peak_source: str, mesh) -> dict:
  return {
      "run_id": cfg.fingerprint(),
      "config": cfg.to_dict(),
      "params": flops.param_counts(cfg.model, cfg.vocab_size),
      "param_layout": model.PARAM_LAYOUT,
      "flops": flops.run_flops(cfg),
      "tokens_planned": cfg.total_steps * cfg.tokens_per_step,
      "steps_planned": cfg.total_steps,
      "hyper": hyper,
      "vocab": {"size": cfg.vocab_size, "layout": cfg.vocab.table()},
      "data": source.describe,
      "peak_flops_per_device": peak, "peak_flops_source": peak_source,
      "versions": versions(),
      "hardware": hardware(mesh),
      "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
      "diverged_at": None, "error": None,
  }
