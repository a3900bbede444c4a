"""The denoiser: a bidirectional pre-norm transformer in Flax NNX (METHOD.md §2.1).

RMSNorm, QK-norm, RoPE, SwiGLU, untied zero-initialised head, no time input (the denoiser reads the mask ratio
from its input). Every parameter carries logical axis names; `mdm_jax.sharding` maps them onto the mesh with its one
rules table. Training code uses the functional form: `split` once, then `apply(graphdef, params, tokens)` under jit.
"""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
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


def rope_tables(length: int, dim: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
  """cos, sin [L, D] of the rotate-half convention, in float64 then float32: trace-time constants."""
  inv_freq_F = theta ** (-np.arange(0, dim, 2, dtype=np.float64) / dim)
  angles_LxF = np.arange(length, dtype=np.float64)[:, None] * inv_freq_F[None, :]
  angles_LxD = np.concatenate([angles_LxF, angles_LxF], axis=-1)
  return np.cos(angles_LxD).astype(np.float32), np.sin(angles_LxD).astype(np.float32)


def rope(x_BxLxHxD, theta: float):
  """Rotary position embedding, rotate-half convention over the head dim."""
  cos_LxD, sin_LxD = rope_tables(x_BxLxHxD.shape[1], x_BxLxHxD.shape[-1], theta)
  x1, x2 = jnp.split(x_BxLxHxD, 2, axis=-1)
  rotated = jnp.concatenate([-x2, x1], axis=-1)
  return x_BxLxHxD * cos_LxD[:, None, :] + rotated * sin_LxD[:, None, :]


def dense(x_BxLxD, w_DxF):
  """x @ w as one 2-D matmul over all tokens: its weight gradient is then a plain xᵀ·g dot (no transposes)."""
  return (x_BxLxD.reshape(-1, x_BxLxD.shape[-1]) @ w_DxF).reshape(*x_BxLxD.shape[:-1], w_DxF.shape[-1])


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
    q = split(dense(x_BxLxD, self.wq[...]))
    k = split(dense(x_BxLxD, self.wk[...]))
    v = split(dense(x_BxLxD, self.wv[...]))
    if self.q_norm is not None:
      q, k = self.q_norm(q), self.k_norm(k)
    # 1/√Dh folded into q: one elementwise pass over [B, L, H, Dh], fused with the norm, RoPE and the transpose.
    q = rope(q, self.theta) * (1.0 / np.sqrt(self.head_dim)).astype(np.float32)
    k = rope(k, self.theta)
    heads_first = lambda y: y.transpose(0, 2, 1, 3)   # [B, H, L, Dh]: batched matmuls with batch dims leading
    out_BxHxLxD = attention_core(heads_first(q), heads_first(k), heads_first(v))   # bidirectional: no mask
    return dense(out_BxHxLxD.transpose(0, 2, 1, 3).reshape(b, l, -1), self.wo[...])


@jax.custom_vjp
def attention_core(q_BxHxLxD, k_BxHxLxD, v_BxHxLxD):
  """softmax(q kᵀ) v over all positions (q already scaled). Custom VJP: the probabilities are saved once and the
  four backward matmuls are canonical batched matmuls; no [B, H, L, L] broadcasts are materialised."""
  return _attention_fwd(q_BxHxLxD, k_BxHxLxD, v_BxHxLxD)[0]


def _attention_fwd(q, k, v):
  scores = jnp.einsum("bhqd,bhkd->bhqk", q, k).astype(jnp.float32)
  e = jnp.exp(scores - jnp.max(scores, axis=-1, keepdims=True))
  probs = (e * (1.0 / jnp.sum(e, axis=-1, keepdims=True))).astype(v.dtype)
  out = jnp.einsum("bhqk,bhkd->bhqd", probs, v)
  return out, (q, k, v, probs, out)


def _attention_bwd(res, d_out):
  q, k, v, probs, out = res
  d_v = jnp.einsum("bhqk,bhqd->bhkd", probs, d_out)
  d_probs = jnp.einsum("bhqd,bhkd->bhqk", d_out, v)
  # Σ_k P·dP = Σ_d O·dO (FlashAttention's δ): a reduction over [.., Dh] instead of [.., L]
  delta = jnp.sum(d_out.astype(jnp.float32) * out.astype(jnp.float32), axis=-1, keepdims=True)
  d_scores = (probs.astype(jnp.float32) * (d_probs.astype(jnp.float32) - delta)).astype(q.dtype)
  d_q = jnp.einsum("bhqk,bhkd->bhqd", d_scores, k)
  d_k = jnp.einsum("bhqk,bhqd->bhkd", d_scores, q)
  return d_q, d_k, d_v


attention_core.defvjp(_attention_fwd, _attention_bwd)


@jax.custom_vjp
def swiglu(gate, up):
  """silu(gate) · up. Custom VJP: saves only its two inputs; the backward is one elementwise pass."""
  return jax.nn.silu(gate) * up


def _swiglu_fwd(gate, up):
  return swiglu(gate, up), (gate, up)


def _swiglu_bwd(res, d_out):
  gate, up = res
  sig = jax.nn.sigmoid(gate)
  silu = gate * sig
  d_gate = d_out * up * sig * (1.0 + gate * (1.0 - sig))
  return d_gate, d_out * silu


swiglu.defvjp(_swiglu_fwd, _swiglu_bwd)


class SwiGLU(nnx.Module):
  def __init__(self, cfg: ModelConfig, mult: Multipliers, rngs: nnx.Rngs):
    d, f = cfg.d_model, cfg.d_ff
    self.w_gate = _param(rngs, (d, f), mult.init_std("w_gate"), ("embed", "mlp"))
    self.w_up = _param(rngs, (d, f), mult.init_std("w_up"), ("embed", "mlp"))
    self.w_down = _param(rngs, (f, d), mult.init_std("w_down"), ("mlp", "embed"))

  def __call__(self, x_BxLxD):
    b, l, d = x_BxLxD.shape
    return swiglu_mlp(x_BxLxD.reshape(b * l, d), self.w_gate[...], self.w_up[...], self.w_down[...]).reshape(b, l, d)


@jax.custom_vjp
def swiglu_mlp(x_NxD, w_gate_DxF, w_up_DxF, w_down_FxD):
  """(silu(x W_gate) · x W_up) W_down on 2-D [tokens, d] activations. Custom VJP: saves only x, gate and up (the
  product is recomputed elementwise in the backward), so each layer keeps 2 [N, F] buffers instead of 5; every
  backward matmul is a plain 2-D dot."""
  return _swiglu_mlp_fwd(x_NxD, w_gate_DxF, w_up_DxF, w_down_FxD)[0]


def _swiglu_mlp_fwd(x, w_gate, w_up, w_down):
  gate, up = x @ w_gate, x @ w_up
  return swiglu(gate, up) @ w_down, (x, gate, up, w_gate, w_up, w_down)


def _swiglu_mlp_bwd(res, d_out):
  x, gate, up, w_gate, w_up, w_down = res
  # The barrier (tied to d_out) keeps the recomputation here: without it XLA CSEs it with the forward's or hoists
  # it into the forward, and the sigmoid, silu and product stay alive until here (3 more [N, F] buffers per layer).
  gate, up, d_out = jax.lax.optimization_barrier((gate, up, d_out))
  d_gate, d_up = _swiglu_bwd((gate, up), d_out @ w_down.T)
  d_x = d_gate @ w_gate.T + d_up @ w_up.T
  return d_x, x.T @ d_gate, x.T @ d_up, swiglu(gate, up).T @ d_out


swiglu_mlp.defvjp(_swiglu_mlp_fwd, _swiglu_mlp_bwd)


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
    return dense(self.final_norm(h_BxLxD), self.head[...]) * self.head_mult


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
