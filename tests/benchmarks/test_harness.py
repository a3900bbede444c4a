"""The benchmark harness: the FLOP formula against a hand count and XLA, bracketed ratios, load and memory probes."""

import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import harness, jax_probe, sizes


def hand_count_train_flops_per_token(cfg: sizes.BenchConfig) -> float:
  """Every matmul of one sequence's forward as (m, k, n) -> 2·m·k·n, times 3 for training, per token."""
  s, d, f, h, dh, v = cfg.seq, cfg.d, cfg.ff, cfg.n_heads, cfg.head_dim, cfg.vocab
  per_layer = [(s, d, d)] * 4 + [(s, d, f)] * 2 + [(s, f, d)]  # q, k, v, o; gate, up; down
  per_layer += [(s, dh, s)] * h + [(s, s, dh)] * h  # q·kᵀ and p·v for every head, full (non-causal) square
  forward = sum(2 * m * k * n for m, k, n in per_layer * cfg.n_layers + [(s, d, v)])  # + head
  return 3 * forward / s


@pytest.mark.parametrize("name", sorted(sizes.SIZES))
def test_train_flops_per_token_matches_hand_count(name):
  c = sizes.SIZES[name]
  assert harness.train_flops_per_token(c.d, c.n_layers, c.n_heads, c.ff, c.vocab, c.seq) == \
      hand_count_train_flops_per_token(c)


def test_useful_flops_count_the_head_on_the_masked_fraction_of_the_rows():
  """The head's train FLOPs scale with head_rows; the masked fraction matches the lab's own t and mask sampling."""
  c = sizes.SIZES["small"]
  full = harness.train_flops_per_token(c.d, c.n_layers, c.n_heads, c.ff, c.vocab, c.seq)
  useful = harness.train_flops_per_token(c.d, c.n_layers, c.n_heads, c.ff, c.vocab, c.seq, head_rows=0.25)
  assert full - useful == pytest.approx(0.75 * 3 * 2 * c.d * c.vocab)
  from mdm_jax import diffusion
  from mdm_jax.config import DiffusionConfig
  dcfg = DiffusionConfig(schedule="linear", sampling_eps=sizes.SAMPLING_EPS, antithetic=True)
  t = diffusion.sample_t(jax.random.key(0), 4096, dcfg)
  uniform = jax.random.uniform(jax.random.key(1), (4096, 256))
  masked = diffusion.corrupt(uniform, jnp.zeros((4096, 256), jnp.int32), jnp.ones((4096, 256), bool), t, dcfg, 1)[1]
  assert float(masked.mean()) == pytest.approx(sizes.MASKED_FRACTION, abs=0.002)   # sd ≈ 0.0005


def test_tiny_hand_count_value():
  # tiny, written out: per layer 4·2·128·128² + 3·2·128·128·512 + 2·4·2·128²·32 = 75,497,472; ×2 layers
  # + head 2·128·128·512 = 16,777,216 -> 167,772,160 per sequence of 128 -> 1,310,720 per token, ×3.
  assert hand_count_train_flops_per_token(sizes.SIZES["tiny"]) == 3 * 1_310_720


def test_forward_flops_match_xla_cost_analysis():
  """XLA's count of the probe's compiled forward (matmuls plus elementwise work) is within 5 % of the formula."""
  cfg = sizes.SIZES["tiny"]
  params = jax_probe.init_params(cfg, jax.random.key(0))
  tokens = jnp.asarray(sizes.fixed_batch(cfg))
  compiled = jax.jit(jax_probe.forward, static_argnums=2).lower(params, tokens, cfg).compile()
  cost = compiled.cost_analysis()
  xla_flops = (cost[0] if isinstance(cost, list) else cost)["flops"]
  formula = harness.train_flops_per_token(cfg.d, cfg.n_layers, cfg.n_heads, cfg.ff, cfg.vocab, cfg.seq) / 3
  assert xla_flops / (formula * cfg.tokens_per_step) == pytest.approx(1.0, abs=0.05)


def _spec(name: str, step_s: float, steps_per_call: int = 1) -> harness.ImplSpec:
  kwargs = {"step_s": step_s, "steps_per_call": steps_per_call}
  return harness.ImplSpec(name, "benchmarks.harness", "sleep_step", kwargs, "numpy")


def test_bracketed_ratio_of_known_step_times():
  ref, cand = harness.Worker(_spec("ref", 0.03)), harness.Worker(_spec("cand", 0.02, steps_per_call=3))
  try:
    assert ref.wait_ready() == "ok" and cand.wait_ready() == "ok"
    out = harness.run_bracketed(ref, [cand], {"ref": 10, "cand": 5}, rounds=3, max_other_cores=float("inf"))
  finally:
    ref.close()
    cand.close()
  assert [clean for _, clean in out["ratios"]["cand"]] == [True] * 3  # no load limit: every block counts
  assert harness.median_ratio(out["ratios"]["cand"]) == (pytest.approx(1.5, rel=0.1), 3)
  assert out["logs"]["ref"].summary()["blocks"] == 6 and out["logs"]["cand"].summary()["blocks"] == 3
  assert np.median(out["logs"]["cand"].kept_step_s()) == pytest.approx(0.02, rel=0.1)   # per step, not per call


def test_median_ratio_prefers_clean_rounds():
  assert harness.median_ratio([(0.5, False), (1.0, True), (1.2, True), (3.0, False)]) == (1.1, 2)
  assert harness.median_ratio([(0.5, False), (0.7, False), (3.0, False)]) == (0.7, 0)


def test_import_error_in_worker_is_a_skip():
  worker = harness.Worker(harness.ImplSpec("missing", "benchmarks.no_such_module", "make_step", {}, "numpy"))
  assert worker.wait_ready() == "skipped"
  assert "no_such_module" in worker.reason
  worker.close()


def test_background_load_is_seen_in_a_block():
  worker = harness.Worker(_spec("w", 0.01))
  spin = "import time\nend = time.perf_counter() + 2.5\nwhile time.perf_counter() < end: pass"
  try:
    assert worker.wait_ready() == "ok"
    burner = subprocess.Popen([sys.executable, "-c", spin])
    time.sleep(0.3)  # let the burner start spinning
    block = worker.call("block", 100)
    burner.wait()
  finally:
    worker.close()
  assert block["other_cores"] > 0.5  # one spinning process is close to one core of other work


def test_vm_hwm_tracks_an_allocation_and_resets():
  if not harness.reset_hwm():
    pytest.skip("/proc/self/clear_refs is not writable here")
  before = harness.vm_hwm_mb()
  block = np.ones(200 * 2**20 // 8)  # 200 MiB, touched
  peak = harness.vm_hwm_mb()
  del block
  harness.reset_hwm()
  assert peak - before > 150
  assert harness.vm_hwm_mb() < peak - 150
