"""The CPU attention kernel (mdm_jax/cpu_attention.py) against numpy and autodiff, under vmap, and its fallbacks."""
import contextlib
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mdm_jax import cpu_attention, ops

AUTO = jax.sharding.AxisType.Auto
pytestmark = pytest.mark.skipif(not cpu_attention.available(), reason="the kernel cannot build here")


def inputs(b=2, h=3, l=37, dh=16, scale=1.0, seed=0):
  """q, k heads-first; v and the output's gradient tokens-major. Odd sizes catch stride mistakes."""
  rng = np.random.default_rng(seed)
  q, k = (rng.standard_normal((b, h, l, dh), dtype=np.float32) * scale for _ in range(2))
  v, d_out = (rng.standard_normal((b, l, h, dh), dtype=np.float32) for _ in range(2))
  return q, k, v, d_out


def numpy_forward(q, k, v):
  scores = np.einsum("bhqd,bhkd->bhqk", q.astype(np.float64), k.astype(np.float64))
  e = np.exp(scores - scores.max(-1, keepdims=True))
  probs = e / e.sum(-1, keepdims=True)
  return np.einsum("bhqk,bkhd->bqhd", probs, v.astype(np.float64)), probs


@pytest.mark.parametrize("scale", [0.3, 2.0])   # near-uniform and peaked rows (scores of std 0.4 and 16)
def test_forward_matches_numpy(scale):
  q, k, v, _ = inputs(scale=scale)
  out, probs = jax.jit(cpu_attention.forward)(q, k, v)
  want_out, want_probs = numpy_forward(q, k, v)
  np.testing.assert_allclose(probs, want_probs, rtol=5e-5, atol=1e-6)   # fp32 scores of up to ~60
  np.testing.assert_allclose(out, want_out, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("scale", [0.3, 2.0])
def test_backward_matches_autodiff_of_the_plain_formula(scale):
  q, k, v, d_out = inputs(scale=scale, seed=1)

  def plain(q, k, v):
    probs = jax.nn.softmax(jnp.einsum("bhqd,bhkd->bhqk", q, k), axis=-1)
    return jnp.einsum("bhqk,bkhd->bqhd", probs, v)

  out, probs = cpu_attention.forward(q, k, v)
  got = jax.jit(cpu_attention.backward)(probs, q, k, v, out, d_out)
  want = jax.vjp(plain, q, k, v)[1](d_out)
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5 * np.abs(w).max())


def test_vmap_folds_the_mapped_axis_into_the_batch():
  """The vmapped sweep groups run one kernel call over all runs: same numbers as one call per run."""
  runs = [inputs(seed=s) for s in range(3)]
  q, k, v, d_out = (np.stack(x) for x in zip(*runs))
  out, probs = jax.jit(jax.vmap(cpu_attention.forward))(q, k, v)
  grads = jax.jit(jax.vmap(cpu_attention.backward))(probs, q, k, v, out, d_out)
  for r in range(3):
    out_r, probs_r = cpu_attention.forward(q[r], k[r], v[r])
    np.testing.assert_array_equal(out[r], out_r)
    np.testing.assert_array_equal(probs[r], probs_r)
    for g, g_r in zip(grads, cpu_attention.backward(probs_r, q[r], k[r], v[r], out_r, d_out[r])):
      np.testing.assert_array_equal(g[r], g_r)


def _attention_jaxpr(mesh=None) -> str:
  q, k, v, _ = inputs(l=8, h=2, dh=4)
  heads_first = lambda x: x.transpose(0, 2, 1, 3)   # also its own inverse
  prep = lambda q, k, _: (heads_first(q), heads_first(k))
  fn = jax.jit(lambda q, k, v: ops.attention(prep, q, k, v, (), np.ones((8, 8), np.float32)))
  q, k = heads_first(q), heads_first(k)
  with jax.sharding.use_abstract_mesh(mesh) if mesh else contextlib.nullcontext():   # what set_mesh sets
    return str(jax.make_jaxpr(fn)(q, k, v))


def test_a_multi_device_mesh_keeps_xla_dots_and_one_device_uses_the_kernel():
  """XLA's partitioner cannot split a custom call; on a mesh of more than one device ops.attention keeps XLA's dots."""
  assert "mdm_attention_fwd" in _attention_jaxpr()
  assert "mdm_attention_fwd" in _attention_jaxpr(jax.sharding.AbstractMesh((1,), ("data",), (AUTO,)))
  assert "mdm_attention_fwd" not in _attention_jaxpr(jax.sharding.AbstractMesh((2,), ("data",), (AUTO,)))


@pytest.mark.parametrize("env, reason", [({"MDM_LAB_CPU_ATTENTION": "0"}, "MDM_LAB_CPU_ATTENTION=0"),
                                         ({"CXX": "no-such-compiler"}, "no C++ compiler")])
def test_without_the_kernel_the_model_keeps_xla_dots_and_says_why(env, reason, tmp_path):
  code = ("from mdm_jax import cpu_attention; import tests.mdm_jax.test_cpu_attention as t; "
          "print(cpu_attention.unavailable_reason()); print('mdm_attention_fwd' in t._attention_jaxpr())")
  done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=os.getcwd(),
                        env={**os.environ, "MDM_LAB_CACHE": str(tmp_path), **env})
  assert done.returncode == 0, done.stderr[-2000:]
  said, used = done.stdout.strip().splitlines()[-2:]
  assert reason in said and used == "False"
  assert ("kernel is unavailable" in done.stderr) == ("CXX" in env)   # a failed build warns; opting out does not
