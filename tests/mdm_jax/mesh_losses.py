"""Run in a subprocess with 8 fake CPU devices: the train loss of 2 steps under several meshes, as JSON."""
import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
os.environ["JAX_PLATFORMS"] = "cpu"

import json  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

from mdm_jax import optim, sharding, step  # noqa: E402
from mdm_jax.config import load_config  # noqa: E402
from mdm_jax.data import pipeline  # noqa: E402
from mdm_jax.train import to_micro  # noqa: E402


def losses(cfg, mesh, batches):
  steps = step.build(cfg, mesh)
  state = steps.init(step.seed_key(cfg.train.seed), optim.hyper_arrays(optim.hyperparams(cfg)))
  out = []
  for batch in batches:
    state, metrics = steps.train(state, jax.device_put(to_micro(batch, cfg), steps.batch_sharding))
    out.append(float(metrics["train/loss"]))
  evaluated = steps.evaluate(state["params"], jax.device_put(batches[0], steps.eval_batch_sharding), np.int32(0))
  out.append(float(evaluated.nelbo / evaluated.tokens))
  return out, sharding.replicated_fraction(steps.param_shapes, jax.tree.map(lambda s: s.spec, steps.state_sharding[
      "params"]), mesh)


def main(meshes):
  cfg = load_config("tiny", ["batch.logical=16", "batch.physical=16", "train.steps=10"])
  source = pipeline.DataSource(cfg)
  it = source.iterator()
  batches = [next(it) for _ in range(2)]
  results = {"1x1x1": losses(cfg, sharding.make_mesh(cfg.mesh, jax.devices()[:1]), batches)}
  for shape in meshes:
    d, f, t = shape
    mcfg = cfg.replace(**{"mesh.data": d, "mesh.fsdp": f, "mesh.tensor": t})
    results[f"{d}x{f}x{t}"] = losses(mcfg, sharding.make_mesh(mcfg.mesh), batches)
  print(json.dumps(results))


if __name__ == "__main__":
  main([tuple(int(x) for x in s.split("x")) for s in sys.argv[1:]])
