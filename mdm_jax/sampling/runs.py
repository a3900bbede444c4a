"""A trained run, loaded for inference: its resolved config, parameters (placed on a mesh) and denoiser.

The model is rebuilt from run.json's config with the run's parametrisation multipliers, and exposed as
`apply = jax.tree_util.Partial(model.apply, graphdef, params)`: a pytree whose leaves are the parameters, so jitted
samplers take them as sharded inputs rather than baking them in as constants.
"""
import dataclasses
import pathlib

import jax
from flax import nnx

from mdm_jax import checkpoint, model, parametrization, runio, sharding
from mdm_jax.config import Config, MeshConfig, from_dict
from mdm_jax.errors import UserError

DEFAULTS_FILE = "inference_defaults.json"


@dataclasses.dataclass
class LoadedRun:
  run_dir: pathlib.Path
  cfg: Config
  step: int
  params: dict
  apply: jax.tree_util.Partial   # tokens [B, L] -> logits [B, L, V]
  mesh: jax.sharding.Mesh

  @property
  def vocab(self):
    return self.cfg.vocab

  def stored_defaults(self) -> dict:
    """{modality: sampler settings} chosen by `mdm-lab sample-sweep` for this run, if it has been swept."""
    path = self.run_dir / DEFAULTS_FILE
    if not path.is_file():
      return {}
    fix = "run `mdm-lab sample-sweep` on this run again, or delete the file to use the built-in defaults"
    try:
      stored = runio.read_json(path)
    except ValueError as e:
      raise UserError(str(path), f"unreadable ({str(e).splitlines()[0][:120]})", fix) from None
    defaults = stored.get("defaults") if isinstance(stored, dict) else None
    if not isinstance(defaults, dict) or not all(isinstance(v, dict) for v in defaults.values()):
      raise UserError(f"{path}: defaults", "is not a mapping of modality -> sampler settings", fix)
    return defaults


def read_config(run_dir: str | pathlib.Path) -> Config:
  path = pathlib.Path(run_dir) / runio.RUN_JSON
  if not path.is_file():
    raise UserError(str(run_dir), "not a run directory (no run.json)", "pass the --out directory of `mdm-lab train`")
  try:
    run = runio.read_json(path)
  except ValueError as e:
    raise UserError(str(path), f"unreadable ({str(e).splitlines()[0][:120]})", "restore it from a backup") from None
  if not isinstance(run, dict) or not isinstance(run.get("config"), dict):
    raise UserError(str(path), "has no config (not a run.json written by `mdm-lab train`)",
                    "pass the --out directory of `mdm-lab train`")
  model.check_param_layout(run, path)
  return from_dict(run["config"])


def load(run_dir: str | pathlib.Path, step: int | None = None, mesh=None) -> LoadedRun:
  """The run's parameters at `step` (default: latest checkpoint), sharded by the training rules over `mesh`
  (default: every device on the data axis)."""
  run_dir = pathlib.Path(run_dir)
  cfg = read_config(run_dir)
  mesh = mesh or sharding.make_mesh(MeshConfig(data=-1))
  graphdef, abstract_state = model.abstract(cfg.model, cfg.vocab_size, parametrization.multipliers(cfg))
  ckpt = checkpoint.Checkpoints(run_dir, keep=1, every=1, create=False)
  latest, available = ckpt.latest_step(), ckpt.all_steps()   # all_steps() is sorted
  ckpt.close()
  step = latest if step is None else step
  if step is None or step not in available:
    raise UserError(str(ckpt.dir), f"no checkpoint at step {step}" if step else "no checkpoint",
                    f"available steps: {available}" if available else "train the run first")
  host_params = _like(checkpoint.load_params(run_dir, step), nnx.to_pure_dict(abstract_state), run_dir)
  params = jax.device_put(host_params, sharding.named(mesh, sharding.param_specs(abstract_state)))
  return LoadedRun(run_dir, cfg, int(step), params, jax.tree_util.Partial(model.apply, graphdef, params), mesh)


def _like(restored, template, run_dir):
  """`restored` re-keyed like `template` (a checkpoint restored without a target has str keys for list indices)."""
  if not isinstance(template, dict):
    if not hasattr(restored, "shape") or tuple(restored.shape) != tuple(template.shape):
      raise UserError(str(run_dir), "checkpoint parameters do not match the model in run.json",
                      "was the run written by another version of mdm-lab?")
    return restored
  if not isinstance(restored, dict) or {str(k) for k in restored} != {str(k) for k in template}:
    raise UserError(str(run_dir), "checkpoint parameter names do not match the model in run.json",
                    "was the run written by another version of mdm-lab?")
  by_name = {str(k): v for k, v in restored.items()}
  return {k: _like(by_name[str(k)], v, run_dir) for k, v in template.items()}
