"""Every hand-written VJP of the fast step against jax.grad of the plain formulation (fp32, ≤ 1e-5 relative)."""
import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mdm_jax import cpu_attention, diffusion, model, ops
from mdm_jax.config import ModelConfig

RTOL = 1e-5


def assert_close(got, want):
  """Relative to the array's scale: entries near zero are compared at 1e-5 of the largest magnitude."""
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  np.testing.assert_allclose(got, want, rtol=RTOL, atol=RTOL * np.max(np.abs(want)))


def plain_attention(prep, q, k, v, params, w_out):
  q_h, k_h = prep(q, k, params)
  probs = jax.nn.softmax(jnp.einsum("bhqd,bhkd->bhqk", q_h, k_h), axis=-1)
  out = jnp.einsum("bhqk,bkhd->bqhd", probs, v)
  return out.reshape(*out.shape[:2], -1) @ w_out


def scaled_heads_first(q, k, params):
  """A prep with parameters of its own, like the model's QK-norm scales."""
  return (q * params[0]).transpose(0, 2, 1, 3), (k * params[1]).transpose(0, 2, 1, 3)


def plain_swiglu_down(gate, up, w_down_DxF):
  return (jax.nn.silu(gate) * up) @ w_down_DxF.T


def plain_norm_dense(x, scale, ws, eps):
  return tuple(plain_rms_norm(x, scale, eps) @ w for w in ws)


def plain_rms_norm(x, scale, eps):
  return x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + eps) * scale


def plain_cross_entropy(logits, targets, mask_id):
  never_mask = jnp.where(jnp.arange(logits.shape[-1]) == mask_id, -jnp.inf, 0.0)
  lse = jax.nn.logsumexp(logits + never_mask, axis=-1)
  return lse - jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]


def _normal(key, *shapes, scale=1.0):
  return [scale * jax.random.normal(k, s, jnp.float32) for k, s in zip(jax.random.split(key, len(shapes)), shapes)]


def _check_vjp(fast, plain, args, n_diff):
  """Values and the gradient of a random projection of the output w.r.t. the first n_diff args."""
  out = plain(*args)
  assert_close(fast(*args), out)
  weights = jax.random.normal(jax.random.key(9), out.shape, jnp.float32)
  loss = lambda f: lambda *a: jnp.sum(f(*a, *args[n_diff:]) * weights)
  argnums = tuple(range(n_diff))
  jax.tree.map(assert_close, jax.grad(loss(fast), argnums)(*args[:n_diff]),
               jax.grad(loss(plain), argnums)(*args[:n_diff]))


@pytest.mark.parametrize("core", ["cpu kernel", "xla"])   # ops.attention's two cores (mdm_jax/cpu_attention.py)
@pytest.mark.parametrize("scale", [0.3, 3.0])   # near-uniform and peaked attention
def test_attention_matches_autodiff_for_q_k_v_the_prep_parameters_and_the_projection(scale, core):
  if core == "cpu kernel" and not cpu_attention.available():
    pytest.fail(f"the CPU attention kernel should build here: {cpu_attention.unavailable_reason()}")
  q, k, v, s_q, s_k = _normal(jax.random.key(0), (2, 16, 3, 8), (2, 16, 3, 8), (2, 16, 3, 8), (8,), (8,), scale=scale)
  (w_out,) = _normal(jax.random.key(14), (24, 10))
  fast = jax.jit(lambda q, k, v, p, w: ops.attention(scaled_heads_first, q, k, v, p, w))
  plain = lambda q, k, v, p, w: plain_attention(scaled_heads_first, q, k, v, p, w)
  with cpu_attention.xla_only() if core == "xla" else contextlib.nullcontext():
    lowered = fast.lower(q, k, v, (s_q, s_k), w_out).as_text()
    assert ("mdm_attention_fwd" in lowered) == (core == "cpu kernel")
    _check_vjp(fast, plain, (q, k, v, (s_q, s_k), w_out), 5)


def test_swiglu_down_matches_autodiff_for_gate_up_and_the_weight():
  gate, up, w_down = _normal(jax.random.key(8), (48, 40), (48, 40), (16, 40), scale=2.0)
  _check_vjp(jax.jit(ops.swiglu_down), plain_swiglu_down, (gate, up, w_down), 3)


def test_norm_dense_matches_autodiff_for_input_scale_and_every_weight():
  x, scale, w1, w2 = _normal(jax.random.key(13), (48, 16), (16,), (16, 40), (16, 8), scale=2.0)
  fast = lambda *a: jnp.concatenate(ops.norm_dense(a[0], a[1], a[2:], 1e-6), axis=-1)
  plain = lambda *a: jnp.concatenate(plain_norm_dense(a[0], a[1], a[2:], 1e-6), axis=-1)
  _check_vjp(jax.jit(fast), plain, (x, scale, w1, w2), 4)


@pytest.mark.parametrize("shape", [(6, 32), (2, 5, 3, 16)])   # model width and per-head (QK-norm) layouts
def test_rms_norm_matches_autodiff_for_input_and_scale(shape):
  x, scale = _normal(jax.random.key(10), shape, shape[-1:], scale=2.0)
  eps = 1e-6
  _check_vjp(jax.jit(lambda x, s: ops.rms_norm(x, s, eps)), lambda x, s: plain_rms_norm(x, s, eps), (x, scale), 2)


def test_cross_entropy_matches_autodiff_with_the_mask_logit_excluded():
  mask_id = 5
  (logits,) = _normal(jax.random.key(2), (3, 7, 11), scale=4.0)
  logits = logits.at[..., mask_id].set(50.0)   # a huge [MASK] logit must change nothing
  targets = jax.random.randint(jax.random.key(3), (3, 7), 0, 11)
  targets = jnp.where(targets == mask_id, 0, targets)
  fast = lambda x, t: diffusion.cross_entropy(x, t, mask_id)
  _check_vjp(fast, lambda x, t: plain_cross_entropy(x, t, mask_id), (logits, targets), 1)


def test_whole_model_gradient_matches_the_plain_formulation(monkeypatch):
  """The loss gradient of the real model with its custom VJPs equals the one with plain autodiff everywhere."""
  cfg = ModelConfig(d_model=32, n_layers=2, n_heads=2, d_ff=64)
  vocab, mask_id = 40, 39
  graphdef, params = model.init(cfg, vocab, jax.random.key(4))
  params = jax.tree.map(lambda p: p + 0.05 * jax.random.normal(jax.random.key(5), p.shape), params)   # head ≠ 0
  tokens = jax.random.randint(jax.random.key(6), (2, 12), 0, mask_id)
  inputs = jnp.where(jax.random.uniform(jax.random.key(7), tokens.shape) < 0.5, mask_id, tokens)

  def loss(p):
    return jnp.sum(diffusion.cross_entropy(model.apply(graphdef, p, inputs), tokens, mask_id))

  fast_value, fast_grads = jax.value_and_grad(loss)(params)
  monkeypatch.setattr(ops, "attention", plain_attention)
  monkeypatch.setattr(ops, "swiglu_down", plain_swiglu_down)
  monkeypatch.setattr(ops, "norm_dense", plain_norm_dense)
  monkeypatch.setattr(ops, "rms_norm", plain_rms_norm)
  monkeypatch.setattr(diffusion, "_cross_entropy", plain_cross_entropy)
  plain_value, plain_grads = jax.value_and_grad(loss)(params)
  assert_close(fast_value, plain_value)
  jax.tree.map(assert_close, fast_grads, plain_grads)


def _temp_bytes(fn, *args) -> int:
  """Bytes of XLA's temp buffer for the compiled gradient of sum(fn(*args)) w.r.t. every argument."""
  grad = jax.jit(jax.grad(lambda *a: jnp.sum(fn(*a)), argnums=tuple(range(len(args)))))
  return grad.lower(*args).compile().memory_analysis().temp_size_in_bytes


def test_mlp_stack_keeps_two_hidden_activations_per_layer():
  """What `after` is for: the sigmoid and the product are recomputed in the backward, not kept from the forward
  (XLA:CPU would otherwise keep 4 [N, F] buffers per layer alive between the passes)."""
  layers, n, d, f = 6, 512, 64, 256
  x, *ws = _normal(jax.random.key(11), (n, d), *[(d,), (d, f), (d, f), (d, f)] * layers, scale=0.1)

  def stack(x, *ws):
    for i in range(layers):
      scale, w_gate, w_up, w_down = ws[4 * i:4 * i + 4]
      x = x + ops.swiglu_down(*ops.norm_dense(x, scale, (w_gate, w_up), 1e-6), w_down)
    return x
  hidden = n * f * 4   # measured: 16.25 hidden buffers here; 34.25 without `after`, 35.26 with plain autodiff
  assert _temp_bytes(stack, x, *ws) <= (2 * layers + 6) * hidden


def test_rms_norm_stack_keeps_one_activation_per_norm():
  """Its input (which tanh's backward keeps anyway) and no normalised copy: measured 9.0 activations for 8 norms,
  16.1 without `after` or with plain autodiff."""
  layers, n, d = 8, 1024, 128
  x, *scales = _normal(jax.random.key(12), (n, d), *[(d,)] * layers)

  def stack(x, *scales):
    for s in scales:
      x = jnp.tanh(ops.rms_norm(x, s, 1e-6))
    return x
  assert _temp_bytes(stack, x, *scales) <= (layers + 4) * n * d * 4
