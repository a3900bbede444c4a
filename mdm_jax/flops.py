"""FLOP and parameter accounting (METHOD.md §6): one unit-tested function per quantity, non-causal attention.

Forward FLOPs per token:
  dense = L·[2·d·(H + 2·Hkv)·Dh + 2·H·Dh·d + 2·3·d·f]     (q, k, v, o projections; SwiGLU has 3 matmuls)
  attn  = L·4·S·H·Dh                                      (QKᵀ and AV over the whole sequence: no causal ½)
  head  = 2·d·V                                           (the embedding lookup is free)
Training FLOPs per token = 3 × forward (backward = 2 × forward). Norms, softmax and the optimizer are not counted.
"""
import dataclasses
import os
import time

from mdm_jax.config import Config, ModelConfig

CONVENTION = "noncausal"  # attention counted over the full sequence, both matmuls, ×3 for training

# dense bf16 peak FLOP/s per chip by `device.device_kind` (METHOD.md §6.3)
PEAK_FLOPS_BY_KIND = {
    "TPU v4": 275e12, "TPU v5 lite": 197e12, "TPU v5e": 197e12, "TPU v5p": 459e12, "TPU v5": 459e12,
    "TPU v6 lite": 918e12, "TPU v6e": 918e12, "NVIDIA H100": 989e12, "NVIDIA H200": 989e12,
}


@dataclasses.dataclass(frozen=True)
class ForwardFlops:
  dense: float
  attention: float
  head: float

  @property
  def total(self) -> float:
    return self.dense + self.attention + self.head


def forward_flops_per_token(m: ModelConfig, seq_len: int, vocab_size: int, n_kv_heads: int | None = None):
  d, h, dh, f, layers = m.d_model, m.n_heads, m.head_dim, m.d_ff, m.n_layers
  hkv = n_kv_heads or h
  dense = layers * (2 * d * (h + 2 * hkv) * dh + 2 * h * dh * d + 2 * 3 * d * f)
  attention = layers * 4 * seq_len * h * dh
  return ForwardFlops(float(dense), float(attention), float(2 * d * vocab_size))


def train_flops_per_token(cfg: Config) -> float:
  return 3.0 * forward_flops_per_token(cfg.model, cfg.data.seq_len, cfg.vocab_size).total


def param_counts(m: ModelConfig, vocab_size: int) -> dict[str, int]:
  """Parameter counts under the named conventions of METHOD.md §6.2 (norm scales included in non_embedding)."""
  d, f, hd = m.d_model, m.d_ff, m.n_heads * m.head_dim
  per_layer = 4 * d * hd + 3 * d * f + 2 * d + (2 * m.head_dim if m.qk_norm else 0)
  non_embedding = m.n_layers * per_layer + d   # + final norm
  embedding, head = vocab_size * d, d * vocab_size
  return {
      "total": non_embedding + embedding + head,
      "non_embedding": non_embedding,
      "with_head": non_embedding + head,
      "with_attention": non_embedding + head,   # same N as with_head; its C adds 12·L·S·H·Dh per token
  }


def run_flops(cfg: Config) -> dict:
  """What run.json records: the per-token cost, its convention and the planned budget C."""
  per_token = train_flops_per_token(cfg)
  fwd = forward_flops_per_token(cfg.model, cfg.data.seq_len, cfg.vocab_size)
  tokens = cfg.total_steps * cfg.tokens_per_step
  return {"train_per_token": per_token, "convention": CONVENTION, "budget": per_token * tokens,
          "forward_per_token": dataclasses.asdict(fwd), "tokens": tokens}


def measure_matmul_peak(n: int = 1024, seconds: float = 1.0) -> float:
  """This host's fp32 matmul FLOP/s through XLA (best of repeated n×n matmuls): the MFU ceiling on CPU."""
  import jax
  import jax.numpy as jnp
  a = jnp.ones((n, n), jnp.float32)
  mm = jax.jit(lambda x: x @ x)
  mm(a).block_until_ready()
  best, deadline = float("inf"), time.perf_counter() + seconds
  while time.perf_counter() < deadline:
    t0 = time.perf_counter()
    mm(a).block_until_ready()
    best = min(best, time.perf_counter() - t0)
  return 2 * n ** 3 / best


def peak_flops_per_device(given: float = 0.0) -> tuple[float, str]:
  """(peak FLOP/s per device, where it came from): the given value, the device-kind table, or a measurement."""
  if given > 0:
    return given, "given"
  import jax
  kind = jax.devices()[0].device_kind
  for name, peak in PEAK_FLOPS_BY_KIND.items():
    if kind.startswith(name):
      return peak, f"table:{name}"
  cached = os.environ.get("MDM_LAB_PEAK_FLOPS")
  if cached:
    return float(cached), "env:MDM_LAB_PEAK_FLOPS"
  peak = measure_matmul_peak() / max(jax.local_device_count(), 1)   # fake CPU devices share the cores
  os.environ["MDM_LAB_PEAK_FLOPS"] = repr(peak)   # measure once per process
  return peak, "measured:fp32-matmul"


def mfu(train_flops_per_token: float, tokens_per_s: float, n_devices: int, peak_per_device: float) -> float:
  return train_flops_per_token * tokens_per_s / (n_devices * peak_per_device)
