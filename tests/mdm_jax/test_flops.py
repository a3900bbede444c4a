"""FLOP and parameter accounting vs hand counts, the real parameter tree, and XLA's cost analysis."""
import jax
import numpy as np
import pytest

from mdm_jax import cpu_attention, flops, model, optim, scored_head, sharding, step
from mdm_jax.config import ModelConfig, load_config


def test_forward_flops_hand_count():
  m = ModelConfig(d_model=128, n_layers=2, n_heads=4, d_ff=512)
  f = flops.forward_flops_per_token(m, seq_len=128, vocab_size=512)
  # per layer: q,k,v,o = 4·2·128·128; SwiGLU = 3·2·128·512; attention = 4·128 (S) ·128 (H·Dh)
  assert f.dense == 2 * (4 * 2 * 128 * 128 + 3 * 2 * 128 * 512)
  assert f.attention == 2 * 4 * 128 * 128
  assert f.head == 2 * 128 * 512


def test_param_counts_match_the_model():
  m = ModelConfig(d_model=64, n_layers=3, n_heads=4, d_ff=192)
  _, params = model.init(m, 300, jax.random.key(0))
  total = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
  counts = flops.param_counts(m, 300)
  assert counts["total"] == total
  assert counts["non_embedding"] == total - 2 * 64 * 300
  assert counts["with_head"] == counts["non_embedding"] + 64 * 300


def _compiled_step_flops(cfg, scored_head: bool) -> float:
  mesh = sharding.make_mesh(cfg.mesh, jax.devices()[:1])
  steps = step.build(cfg, mesh, scored_head=scored_head)
  state = jax.eval_shape(steps.init.jitted, step.seed_key(0), optim.hyper_arrays(optim.hyperparams(cfg)))
  shape = (1, cfg.batch.logical, cfg.data.seq_len)
  batch = {"tokens": jax.ShapeDtypeStruct(shape, np.int32), "loss_mask": jax.ShapeDtypeStruct(shape, bool),
           "modality": jax.ShapeDtypeStruct(shape, np.int8)}
  with jax.set_mesh(mesh), cpu_attention.xla_only():   # cost analysis cannot see into the CPU attention kernel
    cost = steps.train.jitted.lower(state, batch).compile().cost_analysis()
  return (cost[0] if isinstance(cost, list) else cost)["flops"]


def test_compiled_step_flops_match_formula_within_5_percent():
  """XLA counts 2mnk per dot (forward + backward), so it should sit just above the ×3 non-causal formula."""
  cfg = load_config("tiny")
  formula = flops.train_flops_per_token(cfg) * cfg.tokens_per_step
  assert _compiled_step_flops(cfg, scored_head=False) == pytest.approx(formula, rel=0.05)


def test_scored_head_loop_does_one_chunk_of_head_work_per_trip():
  """XLA counts a loop body once: the scored step is short of the full one by the head's train FLOPs on all but
  one chunk of rows, so a trip does a chunk's head work (no pass over every row inside the loop)."""
  cfg = load_config("tiny")
  head_train = 3 * flops.forward_flops_per_token(cfg.model, cfg.data.seq_len, cfg.vocab_size).head
  skipped = head_train * (cfg.tokens_per_step - scored_head.CHUNK_ROWS)
  saved = _compiled_step_flops(cfg, scored_head=False) - _compiled_step_flops(cfg, scored_head=True)
  assert saved == pytest.approx(skipped, rel=0.05)


def test_mfu_definition():
  assert flops.mfu(6e6, 1e4, 2, 1e11) == pytest.approx(6e6 * 1e4 / 2e11)
  assert flops.peak_flops_per_device(5e12) == (5e12, "given")
