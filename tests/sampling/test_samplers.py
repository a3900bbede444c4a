"""Samplers with hand-fixed logits: which slots each step reveals, prompts, vocabulary classes, Gumbel precision."""
import json
import math
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from mdm_jax.errors import UserError
from mdm_jax.sampling.samplers import SamplerSpec, sample

V, MASK, L = 8, 7, 10
CONF = np.array([0.9, 0.3, 0.6, 0.25, 0.8, 0.5, 0.45, 0.2, 0.7, 0.35])   # p(candidate) of each position
TOKEN = np.arange(L) % 6                                                 # each position's candidate


def fixed_logits(conf_L, token_L) -> np.ndarray:
  """[L, V] log-probabilities: token_L[l] with probability conf_L[l], the rest spread over the other non-mask ids."""
  probs = np.zeros((len(conf_L), V))
  for pos, (p, tok) in enumerate(zip(conf_L, token_L)):
    probs[pos, :MASK] = (1 - p) / (MASK - 1)
    probs[pos, tok] = p
  with np.errstate(divide="ignore"):
    return np.log(probs).astype(np.float32)   # log 0 = −inf on [MASK]


def _fixed(logits_LxV, tokens_BxL):
  return jnp.broadcast_to(logits_LxV, tokens_BxL.shape + logits_LxV.shape[-1:])


def stub(logits_LxV):
  """A denoiser that ignores its input: the same logits at every step."""
  return jax.tree_util.Partial(_fixed, jnp.asarray(logits_LxV))


def requests_rows() -> np.ndarray:
  """Row 0: all masked; row 1: a 3-token prefix; row 2: an infill between 2 + 2 prompt tokens."""
  tokens = np.full((3, L), MASK, np.int32)
  tokens[1, :3] = [1, 2, 3]
  tokens[2, :2], tokens[2, -2:] = [4, 5], [0, 1]
  return tokens


def expected_steps(slots, steps: int, block: int, n_blocks: int) -> dict[int, int]:
  """METHOD.md §7.1 by hand: blocks in order get ⌊steps/blocks⌋ (+1 for the first steps mod blocks); step j of K
  in a block of M slots reveals ⌊M/K⌋ + [j < M mod K] of its most confident slots."""
  blocks = [list(slots[i:i + block]) for i in range(0, n_blocks * block, block)]
  out, first = {}, 0
  for b, members in enumerate(blocks):
    k_steps = steps // n_blocks + (b < steps % n_blocks)
    order = sorted(members, key=lambda p: (-CONF[p], p))
    counts = [len(members) // k_steps + (j < len(members) % k_steps) for j in range(k_steps)]
    for j, c in enumerate(counts):
      out.update({p: first + j for p in order[sum(counts[:j]):sum(counts[:j + 1])]})
    first += k_steps
  return out


@pytest.mark.parametrize("steps,block", [(4, 0), (10, 0), (3, 0), (5, 4)])
def test_topk_reveals_the_most_confident_slots_on_the_linear_schedule(steps, block):
  tokens = requests_rows()
  out = sample(stub(fixed_logits(CONF, TOKEN)), tokens, 0, SamplerSpec("topk", steps, 0.0, block_length=block), MASK)
  n_slots = int((tokens == MASK).sum(1).max())
  n_blocks = -(-n_slots // (block or n_slots))
  for row in range(3):
    slots = np.flatnonzero(tokens[row] == MASK)
    want = expected_steps(slots, steps, block or n_slots, n_blocks)
    assert {int(p): int(out.revealed_at[row, p]) for p in slots} == want
    prompt = tokens[row] != MASK
    np.testing.assert_array_equal(out.tokens[row, prompt], tokens[row, prompt])
    assert (out.revealed_at[row, prompt] == -1).all()
    np.testing.assert_array_equal(out.tokens[row, slots], TOKEN[slots])   # temperature 0: the argmax
  assert out.nfe == min(steps, n_slots)


def test_random_order_keeps_the_schedule_counts_and_varies_with_the_key():
  tokens = requests_rows()
  spec = SamplerSpec("random", 4, 0.0)
  orders = []
  for seed in (0, 1):
    out = sample(stub(fixed_logits(CONF, TOKEN)), tokens, seed, spec, MASK)
    for row in range(3):
      m = int((tokens[row] == MASK).sum())
      counts = np.bincount(out.revealed_at[row][tokens[row] == MASK], minlength=4)
      np.testing.assert_array_equal(counts, [m // 4 + (j < m % 4) for j in range(4)])
      assert (out.tokens[row][tokens[row] != MASK] == tokens[row][tokens[row] != MASK]).all()
    orders.append(out.revealed_at)
  assert not np.array_equal(*orders)


def test_threshold_reveals_all_confident_slots_then_falls_back_to_the_argmax():
  tokens = requests_rows()   # row 0 is all [MASK]
  out = sample(stub(fixed_logits(CONF, TOKEN)), tokens, 0, SamplerSpec("threshold", L, 0.0, threshold=0.55), MASK)
  # step 0: every confidence > 0.55 (0.9, 0.8, 0.7, 0.6); then one per step, most confident first
  want = {0: 0, 4: 0, 8: 0, 2: 0, 5: 1, 6: 2, 9: 3, 1: 4, 3: 5, 7: 6}
  assert {p: int(out.revealed_at[0, p]) for p in range(L)} == want
  assert out.nfe == 7


@pytest.mark.parametrize("steps", [L, 4])
def test_threshold_never_stalls(steps):
  """Every non-mask id is equally likely (confidence 1/7 < λ at every step), yet every slot gets revealed."""
  tokens = requests_rows()
  out = sample(stub(np.zeros((L, V), np.float32)), tokens, 0, SamplerSpec("threshold", steps, 0.0, threshold=0.95),
               MASK)
  assert not (out.tokens == MASK).any()
  assert out.nfe == steps   # the fallback reveals ceil(remaining / steps left) per step, so `steps` bounds the calls


def test_slots_take_only_their_class_ids_and_never_mask():
  tokens = requests_rows()
  preference = np.array([0.0, 3.0, 0.0, 0.0, 4.0, 0.0, 5.0, 9.0], np.float32)   # [MASK] > 6 > 4 > 1 > the rest
  classes = np.zeros(tokens.shape, np.int32)
  classes[:, 5:] = 1
  allowed = np.zeros((2, V), bool)
  allowed[0, :3], allowed[1, 3:6] = True, True
  allowed[:, MASK] = True   # the sampler must remove [MASK] itself
  out = sample(stub(np.tile(preference, (L, 1))), tokens, 0, SamplerSpec("topk", 5, 0.0), MASK, classes, allowed)
  slots = tokens == MASK
  assert (out.tokens[slots & (classes == 0)] == 1).all() and (out.tokens[slots & (classes == 1)] == 4).all()


@pytest.mark.parametrize("spec,tokens,match", [
    (dict(steps=0), None, "--steps"),
    (dict(steps=2, block_length=2), None, "--steps"),          # 5 blocks of 2 slots need >= 5 steps
    (dict(sampler="beam"), None, "--sampler"),
    (dict(threshold=1.5), None, "--threshold"),
    (dict(temperature=-1.0), None, "--temperature"),
    (dict(), np.arange(L)[None] % 6, "nothing to generate"),
])
def test_bad_settings_raise_one_line_user_errors(spec, tokens, match):
  tokens = np.full((1, L), MASK, np.int32) if tokens is None else tokens
  with pytest.raises(UserError, match=match) as info:
    sample(stub(np.zeros((L, V), np.float32)), tokens, 0, SamplerSpec(**{"sampler": "topk", "steps": 4, **spec}), MASK)
  assert "\n" not in str(info.value)


def test_float64_gumbel_matches_the_categorical_and_float32_does_not_at_low_temperature():
  """Four categories one nat apart at τ = 2⁻²² on logits near 2.0: logits/τ ≈ 2²³, where float32 spacing is 0.5-1,
  so the Gumbel noise is rounded to that grid and ties go to the lower index (the larger logit): float32 samples
  are sharper than softmax(logits/τ), i.e. a lower effective temperature. Float64 resolves the noise."""
  tau = 2.0 ** -22
  logits_V = np.float32(2.0) - np.arange(4, dtype=np.float32) * np.float32(tau)
  scaled = logits_V.astype(np.float64) / tau
  p_true = np.exp(scaled - scaled.max()) / np.exp(scaled - scaled.max()).sum()   # [0.644, 0.237, 0.087, 0.032]
  n = 10_000
  logits_1xV = np.append(logits_V, -np.inf)[None].astype(np.float32)   # id 4 plays [MASK]
  result = {}
  for dtype in ("float64", "float32"):
    out = sample(stub(logits_1xV), np.full((n, 1), 4, np.int32), 7, SamplerSpec("topk", 1, tau, gumbel_dtype=dtype),
                 mask_id=4)
    counts = np.bincount(out.tokens[:, 0], minlength=4)
    result[dtype] = (counts / n, stats.chisquare(counts, n * p_true).pvalue)
  assert result["float64"][1] > 0.01, result
  assert result["float32"][1] < 1e-10, result
  assert result["float32"][0][0] > p_true[0] + 0.03   # the top category is over-drawn


def test_model_stays_float32_when_traced_with_x64():
  """The sampler traces the model under x64 (for the Gumbel noise): no float64 may leak into the forward pass."""
  from flax import nnx
  from mdm_jax import model
  from mdm_jax.config import ModelConfig
  graphdef, state = model.abstract(ModelConfig(d_model=16, n_layers=1, n_heads=2, d_ff=32), 20)
  tokens = jax.ShapeDtypeStruct((2, 6), jnp.int32)
  with jax.enable_x64(True):
    text = str(jax.make_jaxpr(lambda p, t: model.apply(graphdef, p, t))(nnx.to_pure_dict(state), tokens))
    leaky = str(jax.make_jaxpr(lambda x: x * jnp.arange(3.0))(jnp.ones(3, jnp.float32)))
  assert re.search(r"f64\[\d", leaky)   # the check can see a float64 array where one leaks ...
  assert not re.search(r"f64\[\d", text)   # ... and the model has none


_SHARDED = r"""
import json, sys
import jax
sys.path.insert(0, sys.argv[1])
from mdm_jax import sharding
from mdm_jax.config import MeshConfig
from mdm_jax.sampling.samplers import SamplerSpec, sample
from test_samplers import CONF, MASK, TOKEN, fixed_logits, requests_rows, stub

mesh = sharding.make_mesh(MeshConfig(data=2))   # 3 rows: padded to 4, two per device
out = sample(stub(fixed_logits(CONF, TOKEN)), requests_rows(), 0, SamplerSpec("random", 4, 0.0), MASK, mesh=mesh)
print(json.dumps({"devices": len(jax.devices()), "tokens": out.tokens.tolist(), "order": out.revealed_at.tolist()}))
"""


def test_sharded_batch_gives_the_same_samples():
  """Rows sharded over a 2-device data axis reveal the same slots in the same random order as on one device."""
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-c", _SHARDED, os.path.dirname(os.path.abspath(__file__))], env=env,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  sharded = json.loads(proc.stdout.strip().splitlines()[-1])
  single = sample(stub(fixed_logits(CONF, TOKEN)), requests_rows(), 0, SamplerSpec("random", 4, 0.0), MASK)
  assert sharded["devices"] == 2
  np.testing.assert_array_equal(sharded["tokens"], single.tokens)
  np.testing.assert_array_equal(sharded["order"], single.revealed_at)


def test_expected_schedule_helper_matches_the_published_counts():
  """Guard the hand computation: 10 slots over 4 steps reveal 3, 3, 2, 2 (LLaDA get_num_transfer_tokens)."""
  counts = np.bincount(list(expected_steps(np.arange(L), 4, L, 1).values()), minlength=4)
  np.testing.assert_array_equal(counts, [3, 3, 2, 2])
  assert math.fsum(counts) == L
