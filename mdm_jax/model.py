"""The denoiser: a bidirectional pre-norm transformer in Flax NNX (METHOD.md §2.1).

RMSNorm, QK-norm, RoPE, SwiGLU, untied zero-initialised head, no time input (the denoiser reads the mask ratio
from its input). Every parameter carries logical axis names; `mdm_jax.sharding` maps them onto the mesh with its one
rules table. Training code uses the functional form: `split` once, then `apply(graphdef, params, tokens)` under jit.
"""
import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from mdm_jax.config import ModelConfig


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


def _param(rngs: nnx.Rngs, shape, std: float, axes: tuple):
  init = jnp.zeros(shape, jnp.float32) if std == 0 else std * jax.random.normal(rngs.params(), shape, jnp.float32)
  return nnx.Param(init, out_sharding=axes, eager_sharding=False)


class RMSNorm(nnx.Module):
  def __init__(self, dim: int, eps: float, axis_name: str = "norm"):
    self.scale = nnx.Param(jnp.ones((dim,), jnp.float32), out_sharding=(axis_name,), eager_sharding=False)
    self.eps = eps

  def __call__(self, x):
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return (normed * self.scale[...]).astype(x.dtype)


def rope(x_BxLxHxD, theta: float):
  """Rotary position embedding, rotate-half convention over the head dim."""
  length, dim = x_BxLxHxD.shape[1], x_BxLxHxD.shape[-1]
  inv_freq_F = 1.0 / theta ** (jnp.arange(0, dim, 2, dtype=jnp.float32) / dim)
  angles_LxF = jnp.arange(length, dtype=jnp.float32)[:, None] * inv_freq_F[None, :]
  cos_LxD = jnp.concatenate([jnp.cos(angles_LxF)] * 2, axis=-1)[None, :, None, :]
  sin_LxD = jnp.concatenate([jnp.sin(angles_LxF)] * 2, axis=-1)[None, :, None, :]
  x1, x2 = jnp.split(x_BxLxHxD, 2, axis=-1)
  rotated = jnp.concatenate([-x2, x1], axis=-1)
  return x_BxLxHxD * cos_LxD + rotated * sin_LxD


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

  def __call__(self, x_BxLxD):
    b, l, _ = x_BxLxD.shape
    split = lambda y: y.reshape(b, l, self.n_heads, self.head_dim)
    q = split(x_BxLxD @ self.wq[...])
    k = split(x_BxLxD @ self.wk[...])
    v = split(x_BxLxD @ self.wv[...])
    if self.q_norm is not None:
      q, k = self.q_norm(q), self.k_norm(k)
    q, k = rope(q, self.theta), rope(k, self.theta)
    scores_BxHxLxL = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(float(self.head_dim)).astype(q.dtype)
    probs_BxHxLxL = jax.nn.softmax(scores_BxHxLxL.astype(jnp.float32), axis=-1).astype(v.dtype)
    out_BxLxHxD = jnp.einsum("bhqk,bkhd->bqhd", probs_BxHxLxL, v)   # bidirectional: no causal mask
    return out_BxLxHxD.reshape(b, l, -1) @ self.wo[...]


class SwiGLU(nnx.Module):
  def __init__(self, cfg: ModelConfig, mult: Multipliers, rngs: nnx.Rngs):
    d, f = cfg.d_model, cfg.d_ff
    self.w_gate = _param(rngs, (d, f), mult.init_std("w_gate"), ("embed", "mlp"))
    self.w_up = _param(rngs, (d, f), mult.init_std("w_up"), ("embed", "mlp"))
    self.w_down = _param(rngs, (f, d), mult.init_std("w_down"), ("mlp", "embed"))

  def __call__(self, x_BxLxD):
    return (jax.nn.silu(x_BxLxD @ self.w_gate[...]) * (x_BxLxD @ self.w_up[...])) @ self.w_down[...]


class Block(nnx.Module):
  def __init__(self, cfg: ModelConfig, mult: Multipliers, rngs: nnx.Rngs):
    self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
    self.attn = Attention(cfg, mult, rngs)
    self.mlp_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
    self.mlp = SwiGLU(cfg, mult, rngs)
    self.residual = mult.residual

  def __call__(self, h_BxLxD):
    h_BxLxD = h_BxLxD + self.residual * self.attn(self.attn_norm(h_BxLxD))
    return h_BxLxD + self.residual * self.mlp(self.mlp_norm(h_BxLxD))


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
    h_BxLxD = jnp.take(self.embed[...], tokens_BxL, axis=0) * self.embed_mult
    h_BxLxD = shard_activation(h_BxLxD)
    for block in self.blocks:
      h_BxLxD = block(h_BxLxD)
    return (self.final_norm(h_BxLxD) @ self.head[...]) * self.head_mult


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
