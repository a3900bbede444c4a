"""Every hand-written VJP of the fast step against jax.grad of the plain formulation (fp32, ≤ 1e-5 relative)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mdm_jax import diffusion, model
from mdm_jax.config import ModelConfig

RTOL = 1e-5


def assert_close(got, want):
  """Relative to the array's scale: entries near zero are compared at 1e-5 of the largest magnitude."""
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  np.testing.assert_allclose(got, want, rtol=RTOL, atol=RTOL * np.max(np.abs(want)))


def plain_attention(q, k, v):
  return jnp.einsum("bhqk,bhkd->bhqd", jax.nn.softmax(jnp.einsum("bhqd,bhkd->bhqk", q, k), axis=-1), v)


def plain_swiglu(gate, up):
  return jax.nn.silu(gate) * up


def plain_swiglu_mlp(x, w_gate, w_up, w_down):
  return (jax.nn.silu(x @ w_gate) * (x @ w_up)) @ w_down


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
  for got, want in zip(jax.grad(loss(fast), argnums)(*args[:n_diff]), jax.grad(loss(plain), argnums)(*args[:n_diff])):
    assert_close(got, want)


@pytest.mark.parametrize("scale", [0.3, 3.0])   # near-uniform and peaked attention
def test_attention_core_matches_autodiff_of_softmax_attention(scale):
  q, k, v = _normal(jax.random.key(0), (2, 3, 16, 8), (2, 3, 16, 8), (2, 3, 16, 8), scale=scale)
  _check_vjp(jax.jit(model.attention_core), plain_attention, (q, k, v), 3)


def test_swiglu_matches_autodiff():
  gate, up = _normal(jax.random.key(1), (64, 32), (64, 32), scale=3.0)
  _check_vjp(model.swiglu, plain_swiglu, (gate, up), 2)


def test_swiglu_mlp_matches_autodiff_for_input_and_all_three_weights():
  x, wg, wu, wd = _normal(jax.random.key(8), (48, 16), (16, 40), (16, 40), (40, 16))
  _check_vjp(jax.jit(model.swiglu_mlp), plain_swiglu_mlp, (x, wg, wu, wd), 4)


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
  monkeypatch.setattr(model, "attention_core", plain_attention)
  monkeypatch.setattr(model, "swiglu", plain_swiglu)
  monkeypatch.setattr(model, "swiglu_mlp", plain_swiglu_mlp)
  monkeypatch.setattr(diffusion, "_cross_entropy", plain_cross_entropy)
  plain_value, plain_grads = jax.value_and_grad(loss)(params)
  assert_close(fast_value, plain_value)
  jax.tree.map(assert_close, fast_grads, plain_grads)
