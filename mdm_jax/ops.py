"""The model's hot ops, with hand-written VJPs for XLA:CPU (fp32; benchmarks/README.md has the measurements).

Each saves fewer activations than autodiff would and writes its backward as canonical dots and single elementwise
passes. `after` keeps recomputations in the backward: XLA:CPU drops `optimization_barrier` before it schedules,
so a recomputation would otherwise be merged with the forward's or moved into it and stay alive in between.
tests/mdm_jax/test_ops.py checks every VJP against autodiff of the plain formula.
"""
import functools

import jax
import jax.numpy as jnp

from mdm_jax import cpu_attention


def after(x, dep):
  """`x` with a false data dependence on `dep` (+ 0 × one entry of it). XLA:CPU drops optimization barriers, so
  this is what keeps a backward recomputation in the backward: without it XLA merges it with the forward's
  identical expression or schedules it into the forward, and its output stays alive in between."""
  return x + (0.0 * dep.reshape(-1)[0]).astype(x.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def rms_norm(x, scale, eps: float):
  """x / rms(x) · scale over the last axis, in fp32. Custom VJP: saves only x; the backward recomputes the rms and
  the normalised x (autodiff keeps the normalised x beside its scaled copy: one more activation per norm)."""
  return (normalise(x, eps)[0] * scale.astype(jnp.float32)).astype(x.dtype)


def normalise(x, eps):
  """(x / rms(x), 1 / rms(x)) in fp32."""
  x32 = x.astype(jnp.float32)
  inv_rms = jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
  return x32 * inv_rms, inv_rms


def _rms_norm_fwd(x, scale, eps):
  return rms_norm(x, scale, eps), (x, scale)


def _rms_norm_bwd(eps, res, d_y):
  x, scale = res
  normed, inv_rms = normalise(after(x, d_y), eps)
  return rms_norm_backward(normed, inv_rms, scale, d_y.astype(jnp.float32), x.dtype)


def rms_norm_backward(normed, inv_rms, scale, d_y, dtype):
  d_normed = d_y * after(scale, d_y)   # not the forward's broadcast of scale: it would stay alive until here
  d_x = inv_rms * (d_normed - normed * jnp.mean(d_normed * normed, axis=-1, keepdims=True))
  d_scale = jnp.sum((d_y * normed).reshape(-1, scale.shape[-1]), axis=0)
  return d_x.astype(dtype), d_scale.astype(scale.dtype)


rms_norm.defvjp(_rms_norm_fwd, _rms_norm_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def norm_dense(x_NxD, scale_D, ws: tuple, eps: float) -> tuple:
  """(rms_norm(x) @ w for w in ws) on 2-D [tokens, d] activations. Custom VJP: saves only x; the backward
  recomputes the normed x for the weight gradients (autodiff would keep it: one more activation per norm)."""
  return _norm_dense_fwd(x_NxD, scale_D, ws, eps)[0]


def _norm_dense_fwd(x, scale, ws, eps):
  x_n = rms_norm(x, scale, eps)
  return tuple(x_n @ w for w in ws), (x, scale, ws)


def _norm_dense_bwd(eps, res, d_ys):
  x, scale, ws = res
  d_x_n = sum(d_y @ w.T for d_y, w in zip(d_ys, ws))
  # Recompute after d_x_n, a matmul output: a dependence on an elementwise d_y (the logits' gradient) would have XLA
  # re-derive its first entry inside each consumer and keep d_y's own inputs alive as long.
  normed, inv_rms = normalise(after(x, d_x_n), eps)
  x_n = (normed * after(scale, d_x_n)).astype(x.dtype)
  d_ws = tuple(x_n.T @ d_y for d_y in d_ys)
  d_x, d_scale = rms_norm_backward(normed, inv_rms, scale, d_x_n.astype(jnp.float32), x.dtype)
  return d_x, d_scale, d_ws


norm_dense.defvjp(_norm_dense_fwd, _norm_dense_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def attention(prep, q_BxLxHxD, k_BxLxHxD, v_BxLxHxD, prep_params, w_out_HDxD):
  """Bidirectional softmax attention and its output projection, tokens-major: [B, L, H, Dh] -> [B, L, D].
  `prep(q, k, prep_params) -> (q, k)` heads-first [B, H, L, Dh] (QK-norm, RoPE, the 1/√Dh scale; q and k are not
  differentiated w.r.t. anything else). Custom VJP: saves the raw q, k, v, the probabilities and the output; the
  backward recomputes `prep`. Autodiff would keep the normed, rotated and transposed q, k, v and both layouts of the
  output (4 more activations per layer, 64 MiB on small). The core (scores, softmax, P·V and their backward) is the
  CPU kernel of mdm_jax/cpu_attention.py where it applies (`_kernel_core`), else XLA's dots, heads-first."""
  return _attention_fwd(prep, q_BxLxHxD, k_BxLxHxD, v_BxLxHxD, prep_params, w_out_HDxD)[0]


def _heads_first(x_BxLxHxD):
  return x_BxLxHxD.transpose(0, 2, 1, 3)   # batched matmuls with their batch dims leading (also the inverse)


def _tokens_major(out_BxHxLxD):
  b, h, l, dh = out_BxHxLxD.shape
  return _heads_first(out_BxHxLxD).reshape(b * l, h * dh)


def _output_rows(out, kernel: bool):
  """The attention output as [tokens, H·Dh]: the kernel's is tokens-major already, XLA's core's heads-first."""
  return out.reshape(out.shape[0] * out.shape[1], -1) if kernel else _tokens_major(out)


def _kernel_core(*arrays) -> bool:
  """Whether attention's core runs as the CPU kernel (mdm_jax/cpu_attention.py): fp32 on a CPU backend and one
  device (XLA's partitioner cannot split a custom call: on a mesh it would gather the whole batch onto each device)."""
  mesh = jax.sharding.get_abstract_mesh()
  one_device = mesh is None or mesh.empty or mesh.size == 1
  return one_device and all(x.dtype == jnp.float32 for x in arrays) and cpu_attention.available()


def _attention_fwd(prep, q, k, v, prep_params, w_out):
  q_h, k_h = prep(q, k, prep_params)
  kernel = _kernel_core(q, k, v)
  if kernel:
    out, probs = cpu_attention.forward(q_h, k_h, v)   # out tokens-major [B, L, H, Dh]: no transposes
  else:
    scores = jnp.einsum("bhqd,bhkd->bhqk", q_h, k_h).astype(jnp.float32)
    e = jnp.exp(scores - jnp.max(scores, axis=-1, keepdims=True))
    probs = (e * (1.0 / jnp.sum(e, axis=-1, keepdims=True))).astype(v.dtype)
    out = jnp.einsum("bhqk,bhkd->bhqd", probs, _heads_first(v))   # heads-first
  y_NxD = _output_rows(out, kernel) @ w_out
  return y_NxD.reshape(*v.shape[:2], -1), (q, k, v, prep_params, w_out, probs, out)


def _attention_bwd(prep, res, d_y):
  q, k, v, prep_params, w_out, probs, out = res
  d_y_NxD = d_y.reshape(-1, d_y.shape[-1])
  d_out_NxHD = d_y_NxD @ w_out.T
  kernel = _kernel_core(q, k, v)   # the forward's choice, made again on the same arrays
  q, k, v, prep_params, out = jax.tree.map(lambda x: after(x, d_out_NxHD), (q, k, v, prep_params, out))
  d_w_out = _output_rows(out, kernel).T @ d_y_NxD
  (q_h, k_h), prep_vjp = jax.vjp(prep, q, k, prep_params)
  if kernel:
    d_q_h, d_k_h, d_v = cpu_attention.backward(probs, q_h, k_h, v, out, d_out_NxHD.reshape(v.shape))
  else:
    d_q_h, d_k_h, d_v = _core_bwd(probs, q_h, k_h, v, out, _heads_first(d_out_NxHD.reshape(v.shape)))
  d_q, d_k, d_prep_params = prep_vjp((d_q_h, d_k_h))
  return d_q, d_k, d_v, d_prep_params, d_w_out


def _core_bwd(probs, q_h, k_h, v, out_h, d_out_h):
  """XLA's backward of the core, heads-first."""
  d_v = jnp.einsum("bhqk,bhqd->bkhd", probs, d_out_h)
  d_probs = jnp.einsum("bhqd,bhkd->bhqk", d_out_h, _heads_first(v))
  # Σ_k P·dP = Σ_d O·dO (FlashAttention's δ): a reduction over [.., Dh] instead of [.., L]
  delta = jnp.sum(d_out_h.astype(jnp.float32) * out_h.astype(jnp.float32), axis=-1, keepdims=True)
  d_scores = (probs.astype(jnp.float32) * (d_probs.astype(jnp.float32) - delta)).astype(q_h.dtype)
  d_q_h = jnp.einsum("bhqk,bhkd->bhqd", d_scores, k_h)
  d_k_h = jnp.einsum("bhqk,bhqd->bhkd", d_scores, q_h)
  return d_q_h, d_k_h, d_v


attention.defvjp(_attention_fwd, _attention_bwd)


@jax.custom_vjp
def swiglu_down(gate_NxF, up_NxF, w_down_DxF):
  """(silu(gate) · up) @ W_downᵀ on 2-D [tokens, d_ff] activations; W_down is stored [d_model, d_ff] (out × in)
  so that its gradient d_outᵀ·h is a [D, F] dot, which XLA:CPU runs ≈ 1.3× faster than the [F, D] one. Custom
  VJP: saves only gate and up; the sigmoid and the product are recomputed in the backward (autodiff, or XLA left
  alone, keeps both: 2 more [N, F] buffers per layer, 128 MiB on small)."""
  return (jax.nn.silu(gate_NxF) * up_NxF) @ w_down_DxF.T


def _swiglu_down_fwd(gate, up, w_down):
  return swiglu_down(gate, up, w_down), (gate, up, w_down)


def _swiglu_down_bwd(res, d_out):
  gate, up, w_down = res
  d_h = d_out @ w_down
  gate = after(gate, d_h)
  sig = jax.nn.sigmoid(gate)
  silu = gate * sig
  d_gate = d_h * up * sig * (1.0 + gate * (1.0 - sig))
  return d_gate, d_h * silu, d_out.T @ (silu * up)


swiglu_down.defvjp(_swiglu_down_fwd, _swiglu_down_bwd)
