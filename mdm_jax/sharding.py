"""Meshes and the one table of logical → mesh axis rules.

Parameters name their logical axes in `mdm_jax.model`; activations in `constrain(...)` calls. This file alone
decides where each logical axis lives on the (data, fsdp, tensor) mesh, MaxText-style. Parameters and optimizer
state are sharded by it; the batch is sharded over data × fsdp.
"""
import math

import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from mdm_jax.config import Config, MeshConfig
from mdm_jax.errors import ConfigError

MESH_AXES = ("data", "fsdp", "tensor")

# logical axis -> mesh axis (or axes, or None = replicated). The single source of truth for placement.
AXIS_RULES = (
    ("batch", ("data", "fsdp")),   # activations and inputs: batch over every data-parallel axis
    ("length", None),
    ("embed_act", None),           # the model dim of activations stays whole
    ("embed", "fsdp"),             # parameters: ZeRO-3 style over fsdp
    ("heads", "tensor"),           # Megatron: attention heads and MLP hidden over tensor
    ("mlp", "tensor"),
    ("vocab", "tensor"),
    ("head_dim", None),
    ("norm", None),
    ("run", None),                 # the stacked-run axis of vmapped sweep groups
)
_RULES = dict(AXIS_RULES)
MAX_REPLICATED_FRACTION = 0.02


def mesh_shape(cfg: MeshConfig, n_devices: int) -> tuple[int, int, int]:
  """Resolve -1 and check the mesh covers exactly the devices."""
  sizes = [cfg.data, cfg.fsdp, cfg.tensor]
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if n_devices % known:
      raise ConfigError("mesh", f"{n_devices} devices cannot be split with fixed axes of product {known}",
                        "choose mesh sizes whose product divides the device count")
    sizes[sizes.index(-1)] = n_devices // known
  if math.prod(sizes) != n_devices:
    raise ConfigError("mesh", f"data×fsdp×tensor = {math.prod(sizes)} but {n_devices} devices are available",
                      "make the product equal the device count, or set one axis to -1")
  return tuple(sizes)


def make_mesh(cfg: MeshConfig, devices=None) -> jax.sharding.Mesh:
  devices = devices if devices is not None else jax.devices()
  shape = mesh_shape(cfg, len(devices))
  # Auto axes: sharding propagates from our constraints (Explicit mode breaks nnx.Embed-style gathers).
  return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * 3, devices=devices)


def batch_ways(mesh: jax.sharding.Mesh) -> int:
  """How many shards the batch is split into: the product of the mesh axes the rules give "batch"."""
  return math.prod(mesh.shape[axis] for axis in _RULES["batch"])


def check_fits(cfg: Config, mesh: jax.sharding.Mesh):
  """Config checks that need the mesh: batch and sharded dims must divide by their axes."""
  ways = batch_ways(mesh)
  if cfg.batch.micro % ways:
    raise ConfigError("batch.physical", f"micro-batch {cfg.batch.micro} is not divisible by data×fsdp = {ways}",
                      "use a batch that is a multiple of the data-parallel ways")
  m = cfg.model
  for name, dim, axis in (("model.n_heads", m.n_heads, "tensor"), ("model.d_ff", m.d_ff, "tensor"),
                          ("model.d_model", m.d_model, "fsdp"), ("vocabulary size", cfg.vocab_size, "tensor")):
    if dim % mesh.shape[axis]:
      raise ConfigError(name, f"{dim} is not divisible by mesh axis {axis}={mesh.shape[axis]}",
                        f"pick a size divisible by {mesh.shape[axis]} or change mesh.{axis}")


def logical_to_spec(logical_axes, mesh_axis_names=MESH_AXES) -> P:
  out = []
  for name in logical_axes:
    axis = _RULES[name] if name is not None else None
    if isinstance(axis, tuple):
      axis = tuple(a for a in axis if a in mesh_axis_names) or None
    elif axis not in mesh_axis_names:
      axis = None
    out.append(axis)
  return P(*out)


def constrain(x, logical_axes):
  """with_sharding_constraint by logical names, when tracing under an active mesh."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh is None or mesh.empty:
    return x
  return jax.lax.with_sharding_constraint(x, logical_to_spec(logical_axes, mesh.axis_names))


def param_specs(abstract_state) -> dict:
  """Pure dict of PartitionSpecs for the model parameters, from their logical names."""
  from flax import nnx
  logical = nnx.to_pure_dict(nnx.get_partition_spec(abstract_state))
  return jax.tree.map(logical_to_spec, logical, is_leaf=lambda x: isinstance(x, P))


def named(mesh, specs):
  return jax.tree.map(lambda s: NamedSharding(mesh, s), specs, is_leaf=lambda x: isinstance(x, P))


def batch_spec(extra_leading: int = 0) -> P:
  """[..., B, L] inputs: batch over data × fsdp, after `extra_leading` unsharded axes (micro-steps, runs)."""
  return P(*([None] * extra_leading), ("data", "fsdp"), None)


def replicated_fraction(shapes: dict, specs: dict, mesh) -> float:
  """Fraction of parameter bytes that every fsdp shard holds in full (no axis of theirs is split over fsdp)."""
  total = replicated = 0
  for shape, spec in zip(jax.tree.leaves(shapes), jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, P))):
    nbytes = int(np.prod(shape.shape)) * shape.dtype.itemsize
    total += nbytes
    axes = [a for part in spec for a in ((part,) if isinstance(part, str) else (part or ()))]
    if "fsdp" not in axes:
      replicated += nbytes
  return replicated / max(total, 1)


def check_replication(shapes: dict, specs: dict, mesh):
  """Fail loudly when FSDP is on but parameters are not actually sharded by it."""
  if mesh.shape["fsdp"] <= 1:
    return 0.0
  frac = replicated_fraction(shapes, specs, mesh)
  if frac > MAX_REPLICATED_FRACTION:
    raise RuntimeError(f"{frac:.1%} of parameter bytes stay replicated with fsdp={mesh.shape['fsdp']} "
                       f"(limit {MAX_REPLICATED_FRACTION:.0%}): check AXIS_RULES in mdm_jax/sharding.py")
  return frac
