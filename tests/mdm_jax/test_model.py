"""The lab's model (NNX, hand-written VJPs in mdm_jax.ops) against benchmarks/jax_probe.py, an independent plain-JAX
implementation of the same architecture that tests/benchmarks checks against the torch reference."""
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import jax_probe, sizes
from mdm_jax import model
from mdm_jax.config import ModelConfig

PROBE = sizes.BenchConfig(d=32, n_layers=2, n_heads=2, ff=48, vocab=40, seq=12, batch=3)


def lab_params_from_probe(probe: dict) -> dict:
  block = lambda p: {"attn": {"wq": p["q"], "wk": p["k"], "wv": p["v"], "wo": p["o"], "q_norm": {"scale": p["q_norm"]},
                              "k_norm": {"scale": p["k_norm"]}},
                     "attn_norm": {"scale": p["attn_norm"]}, "mlp_norm": {"scale": p["mlp_norm"]},
                     "mlp": {"w_gate": p["gate"], "w_up": p["up"], "w_down": p["down"].T}}
  return {"embed": probe["embed"], "blocks": {i: block(p) for i, p in enumerate(probe["layers"])},
          "final_norm": {"scale": probe["final_norm"]}, "head": probe["head"]}


def test_logits_and_gradients_match_the_plain_jax_probe():
  probe = jax_probe.init_params(PROBE, jax.random.key(0))
  keys = iter(jax.random.split(jax.random.key(1), 64))
  probe = jax.tree.map(lambda p: p + 0.3 * jax.random.normal(next(keys), p.shape), probe)   # head, scales ≠ init
  cfg = ModelConfig(d_model=PROBE.d, n_layers=PROBE.n_layers, n_heads=PROBE.n_heads, d_ff=PROBE.ff,
                    norm_eps=sizes.NORM_EPS, rope_theta=sizes.ROPE_THETA, qk_norm=True)
  graphdef, _ = model.init(cfg, PROBE.vocab, jax.random.key(2))
  tokens = jax.random.randint(jax.random.key(3), (PROBE.batch, PROBE.seq), 0, PROBE.vocab)
  weights = jax.random.normal(jax.random.key(4), (PROBE.batch, PROBE.seq, PROBE.vocab))

  lab_loss = lambda p: jnp.sum(model.apply(graphdef, lab_params_from_probe(p), tokens) * weights)
  probe_loss = lambda p: jnp.sum(jax_probe.forward(p, tokens, PROBE) * weights)
  lab_value, lab_grads = jax.jit(jax.value_and_grad(lab_loss))(probe)
  probe_value, probe_grads = jax.jit(jax.value_and_grad(probe_loss))(probe)
  np.testing.assert_allclose(lab_value, probe_value, rtol=1e-5)
  for (path, got), want in zip(jax.tree_util.tree_leaves_with_path(lab_grads), jax.tree.leaves(probe_grads)):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max(), err_msg=str(path))
