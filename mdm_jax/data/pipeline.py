"""Grain input pipelines and the batch contract shared by every data source.

A batch is a dict of numpy arrays of shape [B, L]: "tokens" int32, "loss_mask" bool (False on padding),
"modality" int8 (0 text, 1 image, 2 audio). Text is packed: documents joined with [EOS] and cut into rows of
seq_len (attention crosses document boundaries inside a row; recorded in run.json). Whole documents are held out
for validation. The training order is a Grain index shuffle, reshuffled per epoch and fully determined by the
seed; its iterator state is saved with every checkpoint.
"""
import dataclasses
import math

import grain
import numpy as np

from mdm_jax.config import Config
from mdm_jax.data import text
from mdm_jax.data.vocab import Vocab
from mdm_jax.errors import UserError

LAYOUT_NOTES = {"text_packing": "documents joined with [EOS], rows of seq_len, attention crosses documents",
                "specials_maskable": True, "prompt_unmasked": False}


@dataclasses.dataclass
class PackedText:
  vocab: Vocab
  tokenizer: text.TextTokenizer
  train_rows: np.ndarray      # [N, L] int32
  val_rows: np.ndarray        # [M, L] int32
  train_titles: tuple[str, ...]
  val_titles: tuple[str, ...]


def pack(docs: list[np.ndarray], seq_len: int, eos_id: int) -> np.ndarray:
  """Concatenate documents with [EOS] separators and cut into full rows (the ragged tail is dropped)."""
  stream = np.concatenate([np.append(d, eos_id) for d in docs]).astype(np.int32)
  n = len(stream) // seq_len
  return stream[: n * seq_len].reshape(n, seq_len)


def load_packed_text(cfg: Config) -> PackedText:
  d = cfg.data
  documents = text.embedded_documents()
  if d.val_documents >= len(documents):
    raise UserError("data.val_documents", f"{d.val_documents} held out of {len(documents)} documents leaves none "
                    "for training", f"use fewer than {len(documents)}")
  titles, texts = zip(*documents)
  split = len(documents) - d.val_documents
  tokenizer = text.cached_text_tokenizer(texts[:split], d.text_vocab_size)   # trained on training text only
  encoded = text.encode_documents(tokenizer, texts)
  vocab = cfg.vocab
  train_rows = pack(encoded[:split], d.seq_len, vocab.id("[EOS]"))
  val_rows = pack(encoded[split:], d.seq_len, vocab.id("[EOS]"))
  if len(val_rows) == 0:
    raise UserError("data.seq_len", f"{d.seq_len} is longer than the validation text", "use a shorter seq_len")
  return PackedText(vocab, tokenizer, train_rows, val_rows, titles[:split], titles[split:])


def as_batch(rows_BxL: np.ndarray) -> dict[str, np.ndarray]:
  return {"tokens": rows_BxL.astype(np.int32), "loss_mask": np.ones(rows_BxL.shape, bool),
          "modality": np.zeros(rows_BxL.shape, np.int8)}


def train_dataset(cfg: Config, rows: np.ndarray) -> grain.MapDataset:
  """Batches of `batch.logical` rows for the whole run, in a seed-determined order (per-epoch reshuffle)."""
  needed = cfg.total_steps * cfg.batch.logical
  epochs = max(1, math.ceil(needed / len(rows)))
  return (grain.MapDataset.source(rows).shuffle(seed=cfg.train.seed).repeat(epochs)
          .batch(cfg.batch.logical, drop_remainder=True).map(as_batch))


def eval_batches(cfg: Config, rows: np.ndarray) -> list[dict[str, np.ndarray]]:
  """A fixed list of validation batches (micro-batch sized), the same for every run with this data config."""
  b = cfg.batch.micro
  n = min(cfg.train.eval_batches, max(1, len(rows) // b))
  if len(rows) < b:
    raise UserError("batch.physical", f"{b} rows per batch but only {len(rows)} validation rows",
                    "use a smaller batch or a shorter seq_len")
  return [as_batch(rows[i * b:(i + 1) * b]) for i in range(n)]


def DataSource(cfg: Config):  # noqa: N802 (a factory named like the interface it returns)
  """What the trainer needs from any source: `.iterator()` (checkpointable), `.eval` {name: [batches]}, `.vocab`,
  `.describe`. The embedded text, or a tri-modal mixture from a directory made by `mdm-lab data prepare`."""
  if cfg.data.source == "shakespeare":
    return TextSource(cfg)
  from mdm_jax.data import mixture
  return mixture.from_config(cfg)


class TextSource:
  """Packed embedded text."""

  def __init__(self, cfg: Config):
    packed = load_packed_text(cfg)
    self.vocab, self.tokenizer = packed.vocab, packed.tokenizer
    self.dataset = train_dataset(cfg, packed.train_rows)
    self.eval = {"text": eval_batches(cfg, packed.val_rows)}
    self.describe = {"source": cfg.data.source, "train_rows": int(len(packed.train_rows)),
                     "val_rows": int(len(packed.val_rows)), "train_documents": list(packed.train_titles),
                     "val_documents": list(packed.val_titles), "tokenizer": str(packed.tokenizer.path),
                     "tokenizer_version": packed.tokenizer.version,
                     "train_tokens_available": int(packed.train_rows.size), **LAYOUT_NOTES}

  def iterator(self):
    return iter(self.dataset)
