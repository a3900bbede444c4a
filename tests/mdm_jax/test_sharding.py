"""Meshes and the axis-rules table: the loss does not depend on the mesh; parameters really shard under fsdp."""
import json
import os
import pathlib
import subprocess
import sys

import jax
import pytest

from mdm_jax import model, sharding
from mdm_jax.config import MeshConfig, ModelConfig
from mdm_jax.errors import ConfigError

HERE = pathlib.Path(__file__).parent


def test_loss_is_the_same_on_one_device_and_on_8_fake_devices():
  """1x1x8 (tensor only) runs the scored head (mdm_jax.scored_head) on sharded weights; the others the full head."""
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  out = subprocess.run([sys.executable, str(HERE / "mesh_losses.py"), "8x1x1", "2x4x1", "1x4x2", "1x1x8"], env=env,
                       capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  results = json.loads(out.stdout.strip().splitlines()[-1])
  reference, _ = results.pop("1x1x1")
  for mesh, (values, replicated) in results.items():
    for ref, got in zip(reference, values):
      assert got == pytest.approx(ref, rel=1e-5), (mesh, reference, values)
    if mesh.split("x")[1] != "1":
      assert replicated <= sharding.MAX_REPLICATED_FRACTION, (mesh, replicated)


def test_rules_map_logical_axes_to_mesh_axes():
  assert sharding.logical_to_spec(("batch", "length")) == jax.sharding.PartitionSpec(("data", "fsdp"), None)
  assert sharding.logical_to_spec(("embed", "mlp")) == jax.sharding.PartitionSpec("fsdp", "tensor")
  assert sharding.logical_to_spec(("vocab", "embed")) == jax.sharding.PartitionSpec("tensor", "fsdp")


def test_every_matrix_is_fsdp_sharded_and_the_guard_fails_when_not():
  _, abstract_state = model.abstract(ModelConfig(), 512)
  from flax import nnx
  shapes = nnx.to_pure_dict(abstract_state)
  specs = sharding.param_specs(abstract_state)
  mesh = jax.sharding.AbstractMesh((1, 4, 1), sharding.MESH_AXES)
  assert sharding.replicated_fraction(shapes, specs, mesh) < 0.01   # only norm scales stay whole
  unsharded = jax.tree.map(lambda s: jax.sharding.PartitionSpec(), specs,
                           is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
  with pytest.raises(RuntimeError, match="replicated"):
    sharding.check_replication(shapes, unsharded, mesh)


def test_mesh_shape_fills_and_validates():
  assert sharding.mesh_shape(MeshConfig(data=-1, fsdp=2, tensor=1), 8) == (4, 2, 1)
  with pytest.raises(ConfigError, match="mesh"):
    sharding.mesh_shape(MeshConfig(data=3, fsdp=1, tensor=1), 8)
