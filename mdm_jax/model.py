"""The denoiser: a bidirectional pre-norm transformer in Flax NNX (METHOD.md §2.1).

RMSNorm, QK-norm, RoPE, SwiGLU, untied zero-initialised head, no time input (the denoiser reads the mask ratio
from its input). Every parameter carries logical axis names; `mdm_jax.sharding` maps them onto the mesh with its one
rules table. Training code uses the functional form: `split` once, then `apply(graphdef, params, tokens)` under jit.
The arithmetic of norms, projections, attention and SwiGLU is in `mdm_jax.ops`, whose hand-written VJPs keep few
activations for the backward (tests/mdm_jax/test_model.py checks the whole model against a plain-JAX one).
"""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mdm_jax import ops, scored_head
from mdm_jax.config import ModelConfig
from mdm_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class Multipliers:
  """Forward multipliers and init stds of the parametrisation (`mdm_jax.parametrization.multipliers` builds them)."""
  residual: float = 1.0       # residual branch: h + residual · F(h)
  head: float = 1.0           # logits = head · (x @ W_head)
  embed: float = 1.0          # embedding output
  init_std_hidden: float = 0.02
  init_std_embed: float = 0.02
  init_std_by_module: tuple[tuple[str, float], ...] = ()   # per-module overrides of init_std_hidden, e.g. ("wo", 0.01)

  def init_std(self, module: str) -> float:
    return dict(self.init_std_by_module).get(module, self.init_std_hidden)


# How parameters are stored, recorded in run.json as "param_layout"; bumped when a stored shape changes, so that an
# older run's checkpoints are refused by name instead of failing (or, for a square weight, loading transposed).
# 1: w_down [d_ff, d_model]. 2: w_down [d_model, d_ff].
PARAM_LAYOUT = 2


def check_param_layout(record: dict, path) -> None:
  """UserError when the run.json `record` (read from `path`) was written with another parameter layout."""
  got = record.get("param_layout", 1)
  if got != PARAM_LAYOUT:
    raise UserError(f"{path}: param_layout", f"is {got}; this mdm-lab stores parameters in layout {PARAM_LAYOUT} "
                    "(w_down [d_model, d_ff])", "train the run again into a new directory, or use the mdm-lab "
                    "version that wrote it")


def _param(rngs: nnx.Rngs, shape, std: float, axes: tuple):
  init = jnp.zeros(shape, jnp.float32) if std == 0 else std * jax.random.normal(rngs.params(), shape, jnp.float32)
  return nnx.Param(init, out_sharding=axes, eager_sharding=False)


class RMSNorm(nnx.Module):
  def __init__(self, dim: int, eps: float, axis_name: str = "norm"):
    self.scale = nnx.Param(jnp.ones((dim,), jnp.float32), out_sharding=(axis_name,), eager_sharding=False)
    self.eps = eps

  def __call__(self, x):
    return ops.rms_norm(x, self.scale[...], self.eps)

  def dense(self, x_BxLxD, ws: tuple) -> tuple:
    """(self(x) @ w for w in ws) as 2-D [B·L, F] matmuls over all tokens, keeping only x for the backward
    (ops.norm_dense); every weight gradient is then a plain xᵀ·g dot."""
    return ops.norm_dense(x_BxLxD.reshape(-1, x_BxLxD.shape[-1]), self.scale[...], ws, self.eps)


def rope_tables(length: int, dim: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
  """cos, sin [L, D] of the rotate-half convention, in float64 then float32: trace-time constants."""
  inv_freq_F = theta ** (-np.arange(0, dim, 2, dtype=np.float64) / dim)
  angles_LxF = np.arange(length, dtype=np.float64)[:, None] * inv_freq_F[None, :]
  angles_LxD = np.concatenate([angles_LxF, angles_LxF], axis=-1)
  return np.cos(angles_LxD).astype(np.float32), np.sin(angles_LxD).astype(np.float32)


def rope(x_BxLxHxD, cos_LxD, sin_LxD):
  """Rotary position embedding, rotate-half convention over the head dim (tables from `rope_tables`)."""
  x1, x2 = jnp.split(x_BxLxHxD, 2, axis=-1)
  rotated = jnp.concatenate([-x2, x1], axis=-1)
  return x_BxLxHxD * cos_LxD[:, None, :] + rotated * sin_LxD[:, None, :]


class Attention(nnx.Module):
  def __init__(self, cfg: ModelConfig, mult: Multipliers, rngs: nnx.Rngs):
    d, h, dh = cfg.d_model, cfg.n_heads, cfg.head_dim
    self.wq = _param(rngs, (d, h * dh), mult.init_std("wq"), ("embed", "heads"))
    self.wk = _param(rngs, (d, h * dh), mult.init_std("wk"), ("embed", "heads"))
    self.wv = _param(rngs, (d, h * dh), mult.init_std("wv"), ("embed", "heads"))
    self.wo = _param(rngs, (h * dh, d), mult.init_std("wo"), ("heads", "embed"))
    self.q_norm = RMSNorm(dh, cfg.norm_eps, "head_dim") if cfg.qk_norm else None
    self.k_norm = RMSNorm(dh, cfg.norm_eps, "head_dim") if cfg.qk_norm else None
    self.n_heads, self.head_dim, self.theta = h, dh, cfg.rope_theta

  def __call__(self, h_BxLxD, norm: RMSNorm):
    """Softmax attention of norm(h) with its output projection; the norm is fused into the q/k/v projection."""
    b, l, _ = h_BxLxD.shape
    q, k, v = (y.reshape(b, l, self.n_heads, self.head_dim)
               for y in norm.dense(h_BxLxD, (self.wq[...], self.wk[...], self.wv[...])))
    scales = (self.q_norm.scale[...], self.k_norm.scale[...]) if self.q_norm is not None else ()
    tables = rope_tables(l, self.head_dim, self.theta)   # an argument of prep: the backward recomputes its own
    return ops.attention(self._prep, q, k, v, (scales, tables), self.wo[...])   # bidirectional: no mask

  def _prep(self, q_BxLxHxD, k_BxLxHxD, params):
    """QK-norm, RoPE and 1/√Dh (folded into q), heads-first: one elementwise pass each over q and k."""
    scales, (cos_LxD, sin_LxD) = params
    cos_LxD, sin_LxD = jax.lax.stop_gradient(cos_LxD), jax.lax.stop_gradient(sin_LxD)
    if scales:
      q_BxLxHxD = ops.rms_norm(q_BxLxHxD, scales[0], self.q_norm.eps)
      k_BxLxHxD = ops.rms_norm(k_BxLxHxD, scales[1], self.k_norm.eps)
    q_BxLxHxD = rope(q_BxLxHxD, cos_LxD, sin_LxD) * (1.0 / np.sqrt(self.head_dim)).astype(np.float32)
    k_BxLxHxD = rope(k_BxLxHxD, cos_LxD, sin_LxD)
    return q_BxLxHxD.transpose(0, 2, 1, 3), k_BxLxHxD.transpose(0, 2, 1, 3)


class SwiGLU(nnx.Module):
  def __init__(self, cfg: ModelConfig, mult: Multipliers, rngs: nnx.Rngs):
    d, f = cfg.d_model, cfg.d_ff
    self.w_gate = _param(rngs, (d, f), mult.init_std("w_gate"), ("embed", "mlp"))
    self.w_up = _param(rngs, (d, f), mult.init_std("w_up"), ("embed", "mlp"))
    self.w_down = _param(rngs, (d, f), mult.init_std("w_down"), ("embed", "mlp"))   # [out, in]: ops.swiglu_down

  def __call__(self, h_BxLxD, norm: RMSNorm):
    """SwiGLU of norm(h), the norm fused into the gate/up projection (ops.norm_dense)."""
    gate_NxF, up_NxF = norm.dense(h_BxLxD, (self.w_gate[...], self.w_up[...]))
    return ops.swiglu_down(gate_NxF, up_NxF, self.w_down[...]).reshape(h_BxLxD.shape)


class Block(nnx.Module):
  def __init__(self, cfg: ModelConfig, mult: Multipliers, rngs: nnx.Rngs):
    self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
    self.attn = Attention(cfg, mult, rngs)
    self.mlp_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
    self.mlp = SwiGLU(cfg, mult, rngs)
    self.residual = mult.residual

  def __call__(self, h_BxLxD):
    h_BxLxD = h_BxLxD + self.residual * self.attn(h_BxLxD, self.attn_norm)
    return h_BxLxD + self.residual * self.mlp(h_BxLxD, self.mlp_norm)


class Transformer(nnx.Module):
  """tokens [B, L] (with [MASK] ids) -> logits [B, L, V]."""

  def __init__(self, cfg: ModelConfig, vocab_size: int, rngs: nnx.Rngs, mult: Multipliers | None = None):
    mult = mult or Multipliers(init_std_hidden=cfg.init_std, init_std_embed=cfg.init_std)
    self.embed = _param(rngs, (vocab_size, cfg.d_model), mult.init_std_embed, ("vocab", "embed"))
    self.blocks = nnx.List([Block(cfg, mult, rngs) for _ in range(cfg.n_layers)])
    self.final_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
    self.head = _param(rngs, (cfg.d_model, vocab_size), 0.0, ("embed", "vocab"))   # zero-init, untied
    self.embed_mult, self.head_mult = mult.embed, mult.head

  def __call__(self, tokens_BxL):
    h_BxLxD = self.trunk(tokens_BxL)
    (logits_NxV,) = self.final_norm.dense(h_BxLxD, (self.head[...],))
    return logits_NxV.reshape(*h_BxLxD.shape[:-1], -1) * self.head_mult

  def trunk(self, tokens_BxL):
    """The residual stream after the last block, before the final norm: [B, L, D]."""
    h_BxLxD = jnp.take(self.embed[...], tokens_BxL, axis=0) * self.embed_mult
    h_BxLxD = shard_activation(h_BxLxD)
    for block in self.blocks:
      h_BxLxD = block(h_BxLxD)
    return h_BxLxD

  def scored_cross_entropy(self, tokens_BxL, targets_BxL, weight_BxL, scored_BxL, mask_id: int):
    """(Σ_scored weight · CE, CE [B, L]) with the head run on the scored rows only (`mdm_jax.scored_head`)."""
    h_BxLxD = self.trunk(tokens_BxL)
    loss, ce_N = scored_head.scored_cross_entropy(
        h_BxLxD.reshape(-1, h_BxLxD.shape[-1]), self.final_norm.scale[...], self.head[...], targets_BxL.reshape(-1),
        weight_BxL.reshape(-1), scored_BxL.reshape(-1), head_mult=self.head_mult, eps=self.final_norm.eps,
        mask_id=mask_id)
    return loss, ce_N.reshape(targets_BxL.shape)


def shard_activation(x_BxLxD):
  """Keep activations batch-sharded over (data, fsdp) when a mesh is active; a no-op otherwise."""
  from mdm_jax import sharding   # late import: sharding imports this module's param layout helpers
  return sharding.constrain(x_BxLxD, ("batch", "length", "embed_act"))


def init(cfg: ModelConfig, vocab_size: int, key, mult: Multipliers | None = None):
  """(graphdef, params) with params a plain nested dict of arrays."""
  model = Transformer(cfg, vocab_size, nnx.Rngs(params=key), mult)
  graphdef, state = nnx.split(model, nnx.Param)
  return graphdef, nnx.to_pure_dict(state)


def abstract(cfg: ModelConfig, vocab_size: int, mult: Multipliers | None = None):
  """(graphdef, abstract nnx.State) without allocating: shapes, dtypes and logical axis names."""
  model = nnx.eval_shape(lambda: Transformer(cfg, vocab_size, nnx.Rngs(params=0), mult))
  return nnx.split(model, nnx.Param)


def apply(graphdef, params: dict, tokens_BxL):
  return nnx.merge(graphdef, params)(tokens_BxL)


def apply_scored(graphdef, params: dict, tokens_BxL, targets_BxL, weight_BxL, scored_BxL, mask_id: int):
  return nnx.merge(graphdef, params).scored_cross_entropy(tokens_BxL, targets_BxL, weight_BxL, scored_BxL, mask_id)
