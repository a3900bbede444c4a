"""A Grain pipeline mixing text, image-text and audio-text sequences with weights defined in non-pad tokens.

The weights h (one per source, >= 0, summing to 1) are token shares, not sample shares (METHOD.md §2.2): a source
whose sequences carry few non-pad tokens (a 58-token image pair in a 256-token row) must be drawn more often. With
mean non-pad tokens per sequence n_m, the sampling probability is p_m = (h_m / n_m) / sum_k (h_k / n_k), so the
expected token share p_m n_m / sum_k p_k n_k equals h_m. Grain's MapDataset.mix interleaves the per-source streams
deterministically in those proportions; each stream is a per-epoch reshuffle of its shards. The result is a
MapDataset of batches: fully determined by the seed, and its iterator's get_state/set_state resumes exactly.
Batches follow the contract shared with the text pipeline: dict of [B, L] numpy arrays "tokens" int32,
"loss_mask" bool, "modality" int8, plus "prompt" bool (and "segment" int32 on request).
"""
import logging
import math
from collections.abc import Mapping, Sequence

import numpy as np

from mdm_jax.data import manifest as manifest_lib
from mdm_jax.data import sequences
from mdm_jax.data.shards import ShardSource
from mdm_jax.data.vocab import MODALITIES
from mdm_jax.errors import UserError

BATCH_FIELDS = ("tokens", "loss_mask", "modality", "prompt")


def parse_weights(weights, field: str = "data.mixture") -> dict[str, float]:
  """{modality: weight} from a mapping or a (text, image, audio) sequence; UserError naming the field if invalid."""
  if isinstance(weights, Mapping):
    unknown = [k for k in weights if k not in MODALITIES]
    if unknown:
      raise UserError(f"{field}.{unknown[0]}", f"unknown modality {unknown[0]!r}", f"use {', '.join(MODALITIES)}")
    parsed = {m: float(weights.get(m, 0.0)) for m in MODALITIES}
  elif isinstance(weights, Sequence) and not isinstance(weights, str):
    if len(weights) != len(MODALITIES):
      raise UserError(field, f"needs {len(MODALITIES)} weights ({', '.join(MODALITIES)}), got {len(weights)}",
                      "give one weight per modality")
    parsed = {m: float(w) for m, w in zip(MODALITIES, weights)}
  else:
    raise UserError(field, f"expected weights per modality, got {type(weights).__name__}", "e.g. [0.6, 0.3, 0.1]")
  for m, w in parsed.items():
    if not math.isfinite(w) or w < 0:
      raise UserError(f"{field}.{m}", f"weight must be a finite number >= 0, got {w}", "use non-negative weights")
  total = sum(parsed.values())
  if abs(total - 1.0) > 1e-6:
    raise UserError(field, f"weights must sum to 1, got {total:.6g}", "normalise them")
  return parsed


def sampling_probabilities(weights: dict[str, float], mean_nonpad: dict[str, float]) -> dict[str, float]:
  """Per-sequence draw probabilities that realise the token shares `weights` (sources with weight 0 omitted)."""
  raw = {m: w / mean_nonpad[m] for m, w in weights.items() if w > 0}
  total = sum(raw.values())
  return {m: r / total for m, r in raw.items()}


class TokenShares:
  """Accumulates realised non-pad token shares per source over batches (for logging the realised mixture)."""

  def __init__(self):
    self.tokens = np.zeros(len(MODALITIES), np.int64)
    self.sequences = np.zeros(len(MODALITIES), np.int64)

  def update(self, batch: dict[str, np.ndarray]) -> None:
    source_B = sequences.row_source(batch["modality"])
    np.add.at(self.tokens, source_B, sequences.nonpad_tokens(batch["loss_mask"]))
    np.add.at(self.sequences, source_B, 1)

  def shares(self) -> dict[str, float]:
    total = max(int(self.tokens.sum()), 1)
    return {m: float(self.tokens[i] / total) for i, m in enumerate(MODALITIES)}


class MixtureSource:
  """Train batches mixed by token weights, plus fixed validation batches per modality, from a prepared directory.

  Same surface as the text pipeline's DataSource: .dataset (grain.MapDataset of batches), .iterator(),
  .eval {modality: [batch, ...]}, .describe (JSON-able facts for run.json), .vocab.
  """

  def __init__(self, data_dir, weights, batch_size: int, seed: int = 0, eval_batch_size: int | None = None,
               eval_batches: int = 8, include_segment: bool = False, deep_verify: bool = True):
    import grain  # pylint: disable=import-outside-toplevel
    if batch_size <= 0:
      raise UserError("batch_size", f"must be positive, got {batch_size}")
    self.manifest = manifest_lib.read(data_dir)
    self.vocab = manifest_lib.vocab(self.manifest)
    self.seq_len = int(self.manifest["seq_len"])
    self.fields = BATCH_FIELDS + (("segment",) if include_segment else ())
    self.weights = parse_weights(weights)
    for m, w in self.weights.items():
      if w > 0 and m not in self.manifest["splits"]:
        raise UserError(f"data.mixture.{m}", f"is {w:g} but {data_dir} has no {m} data",
                        f"set its weight to 0, or prepare a set with {m} data")
    train = {m: manifest_lib.split_entries(self.manifest, m, "train") for m, w in self.weights.items() if w > 0}
    mean_nonpad = {m: float(t["mean_nonpad_tokens"]) for m, t in train.items()}
    self.probabilities = sampling_probabilities(self.weights, mean_nonpad)
    streams = []
    for i, m in enumerate(self.probabilities):
      source = ShardSource(data_dir, train[m]["shards"], self.seq_len, deep_verify)
      streams.append(grain.MapDataset.source(source).shuffle(seed=_stream_seed(seed, i)).repeat()
                     .map(self._select))
    mixed = grain.MapDataset.mix(streams, list(self.probabilities.values())) if len(streams) > 1 else streams[0]
    self.dataset = mixed.batch(batch_size, drop_remainder=True)
    self.eval = {}
    for m in MODALITIES:
      if m in self.manifest["splits"]:
        val = manifest_lib.split_entries(self.manifest, m, "val")
        self.eval[m] = self._eval_batches(ShardSource(data_dir, val["shards"], self.seq_len, deep_verify),
                                          eval_batch_size or batch_size, eval_batches)
    self.describe = {
        "source": str(data_dir), "data_set": self.manifest["set"], "config_hash": self.manifest["config_hash"],
        "mixture_weights": self.weights, "sampling_probabilities": self.probabilities,
        "mean_nonpad_tokens": mean_nonpad, "expected_token_shares": _expected_shares(self.probabilities, mean_nonpad),
        "train_sequences": {m: int(t["sequences"]) for m, t in train.items()},
        "val_batches": {m: len(b) for m, b in self.eval.items()}, "layout": self.manifest["layout"],
        "tokenizers": {m: {k: t.get(k) for k in ("version", "checksum")}
                       for m, t in self.manifest["tokenizers"].items()}}
    logging.info("mixture %s: sampling probabilities %s, expected token shares %s", self.weights,
                 self.probabilities, self.describe["expected_token_shares"])

  def _select(self, seq: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {f: seq[f] for f in self.fields}

  def _eval_batches(self, source: ShardSource, batch_size: int, max_batches: int) -> list[dict[str, np.ndarray]]:
    if len(source) == 0:
      raise UserError(source.paths[0], "no validation rows", "prepare with more held-out data")
    batch_size = min(batch_size, len(source))  # a small held-out set gives smaller (but fixed-shape) eval batches
    n = min(max_batches, len(source) // batch_size)
    rows = [self._select(source[i]) for i in range(n * batch_size)]
    return [{f: np.stack([r[f] for r in rows[b * batch_size:(b + 1) * batch_size]]) for f in self.fields}
            for b in range(n)]

  def iterator(self):
    """A checkpointable iterator over train batches (get_state() / set_state(state))."""
    return iter(self.dataset)


def _stream_seed(seed: int, index: int) -> int:
  return (int(seed) * 1_000_003 + 7919 * (index + 1)) % (2 ** 32)


def _expected_shares(probabilities: dict[str, float], mean_nonpad: dict[str, float]) -> dict[str, float]:
  total = sum(p * mean_nonpad[m] for m, p in probabilities.items())
  return {m: p * mean_nonpad[m] / total for m, p in probabilities.items()}


def from_config(cfg) -> MixtureSource:
  """The mixture for a run config whose `data.source` is a prepared directory (duck-typed on mdm_jax.config.Config).

  The config must agree with the manifest on seq_len and on every vocabulary range, since the model's embedding
  table and FLOP count are planned from the config; a mismatch names the config field and the manifest value.
  """
  d = cfg.data
  manifest = manifest_lib.read(d.source)
  expected = {"data.seq_len": (d.seq_len, manifest["seq_len"]),
              "data.text_vocab_size": (d.text_vocab_size, manifest["vocab"]["text_size"]),
              "data.image_vocab_size": (d.image_vocab_size, manifest["vocab"]["image_size"]),
              "data.audio_vocab_size": (d.audio_vocab_size, manifest["vocab"]["audio_size"])}
  for field, (ours, theirs) in expected.items():
    if ours != theirs:
      raise UserError(field, f"is {ours} but {d.source} was prepared with {theirs}", f"set {field}={theirs}")
  return MixtureSource(d.source, d.mixture, batch_size=cfg.batch.logical, seed=cfg.train.seed,
                       eval_batch_size=cfg.batch.micro, eval_batches=cfg.train.eval_batches)
