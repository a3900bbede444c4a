"""mdm_jax.bench: the lab's own train program under the benchmark contract (a call runs steps_per_call steps)."""
import jax
import numpy as np
import pytest

from mdm_jax import bench

DIMS = {"d": 32, "n_layers": 1, "n_heads": 2, "ff": 64, "vocab": 320}   # the byte tokenizer needs >= 260


def test_a_call_runs_steps_per_call_train_steps_and_threads_the_state():
  step_fn, state = bench.make_step(DIMS, batch=2, seq=16)
  per_call = step_fn.steps_per_call
  assert per_call == step_fn.cfg.train.steps_per_call > 1
  params0 = jax.tree.map(np.asarray, state["params"])
  state = step_fn(step_fn(state))
  assert int(state["step"]) == 2 * per_call
  moved = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(params0), jax.tree.leaves(state["params"]))]
  assert all(moved)


def test_compiled_flops_of_one_step_match_the_formula():
  step_fn, state = bench.make_step("tiny")   # at toy sizes elementwise work is not negligible beside the matmuls
  assert bench.compiled_flops(step_fn, state) / bench.formula_flops(step_fn.cfg) == pytest.approx(1.0, abs=0.05)
