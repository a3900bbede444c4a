"""The plain-JAX probe under the harness contract: state = step_fn(state) trains (forward parity is in
test_torch_reference.py)."""

import jax
import numpy as np

from benchmarks import jax_probe

DIMS = {"d": 32, "n_layers": 1, "n_heads": 2, "ff": 64, "vocab": 40}


def test_step_fn_threads_state():
  step_fn, state0 = jax_probe.make_step(DIMS, batch=4, seq=16)
  head0 = np.asarray(state0[0]["head"]).copy()  # state is donated: copy before stepping
  state1 = step_fn(state0)
  head1, loss1 = np.asarray(state1[0]["head"]).copy(), float(state1[3])
  loss2 = float(step_fn(state1)[3])
  assert np.any(head1 != head0)  # the update reached the zero-initialised head
  assert np.isfinite(loss1) and loss1 != loss2  # fresh t and mask every step


def test_init_matches_the_reference_recipe():
  from benchmarks import sizes
  cfg = sizes.resolve(DIMS, batch=2, seq=8)
  params = jax_probe.init_params(cfg, jax.random.key(0))
  assert not np.any(np.asarray(params["head"]))
  assert abs(float(np.std(np.asarray(params["layers"][0]["q"]))) - sizes.INIT_STD) < 0.002
  assert np.all(np.asarray(params["final_norm"]) == 1.0)
