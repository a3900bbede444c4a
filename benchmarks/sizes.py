"""The benchmark model sizes (issue 3 "Benchmark") and the optimizer/objective constants every implementation shares."""

import dataclasses

import numpy as np

from mdm_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class BenchConfig:
  """Shape of one benchmarked train step. `vocab - 1` is the [MASK] id."""
  d: int
  n_layers: int
  n_heads: int
  ff: int
  vocab: int
  seq: int
  batch: int

  @property
  def head_dim(self) -> int:
    return self.d // self.n_heads

  @property
  def mask_id(self) -> int:
    return self.vocab - 1

  @property
  def tokens_per_step(self) -> int:
    return self.batch * self.seq


SIZES = {
    "tiny": BenchConfig(d=128, n_layers=2, n_heads=4, ff=512, vocab=512, seq=128, batch=16),
    "small": BenchConfig(d=256, n_layers=4, n_heads=4, ff=1024, vocab=2048, seq=256, batch=16),
}

# Shared by every implementation so that they do the same work.
NORM_EPS = 1e-6
ROPE_THETA = 10000.0
INIT_STD = 0.02
SAMPLING_EPS = 1e-3
# Expected fraction of masked (scored) positions: t = ε + (1 − ε)·U(0, 1), masked with probability t (linear).
MASKED_FRACTION = (1.0 + SAMPLING_EPS) / 2
LR, BETA1, BETA2, WEIGHT_DECAY, ADAM_EPS, CLIP_NORM = 3e-4, 0.9, 0.95, 0.1, 1e-8, 1.0


def resolve(name_or_dims, batch: int | None = None, seq: int | None = None) -> BenchConfig:
  """A named size ("tiny", "small") or a dict of BenchConfig fields; `batch`/`seq` override when given."""
  if isinstance(name_or_dims, BenchConfig):
    cfg = name_or_dims
  elif isinstance(name_or_dims, str):
    if name_or_dims not in SIZES:
      raise UserError("--sizes", f"unknown size {name_or_dims!r}", f"use one of {sorted(SIZES)}")
    cfg = SIZES[name_or_dims]
  else:
    cfg = BenchConfig(**{"seq": 0, "batch": 0, **dict(name_or_dims)})
  overrides = {k: v for k, v in (("batch", batch), ("seq", seq)) if v is not None}
  return dataclasses.replace(cfg, **overrides)


def fixed_batch(cfg: BenchConfig, seed: int = 0) -> np.ndarray:
  """Uniform tokens in [0, vocab-1) (never [MASK]); the same batch for every implementation."""
  return np.random.default_rng(seed).integers(0, cfg.mask_id, size=(cfg.batch, cfg.seq), dtype=np.int32)
