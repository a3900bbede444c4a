"""Generation requests in the training layout: which positions are prompt (fixed) and which are generated ([MASK]).

  text   packed rows of seq_len: [prefix] [MASK]... [suffix]; a suffix makes it an infill. Slots may take text ids
         or [EOS] (packed documents are joined by [EOS]).
  image  caption -> image, the t2i pair of `data.sequences`: [<t2i>] caption <img> [MASK]×T </img> [PAD]...
  audio  transcript -> speech, the t2s pair: [<t2s>] transcript <aud> [MASK]×n </aud> [PAD]...

The pair layouts come from `sequences.pair_sequence` itself, so a request is a training row whose media codes are
masked. Training never masks [PAD] (loss_mask is False there), so the model cannot choose where audio ends: the
number of audio codes is part of the request (`audio_length` predicts it from the transcript).
"""
import dataclasses

import numpy as np

from mdm_jax.data import sequences
from mdm_jax.data.vocab import MODALITIES, Vocab
from mdm_jax.errors import UserError


@dataclasses.dataclass
class Request:
  modality: str
  tokens: np.ndarray          # [B, L] int32, [MASK] on the slots
  classes: np.ndarray         # [B, L] int32: row of `allowed_table` each position may draw from
  prompts: list[str]          # one per row (for the output files)
  mask_id: int


def check_modality(modality: str) -> str:
  if modality not in MODALITIES:
    raise UserError("--modality", f"unknown modality {modality!r}", f"use one of {', '.join(MODALITIES)}")
  return modality


def allowed_table(vocab: Vocab) -> np.ndarray:
  """[3, V] bool: the ids a slot of each modality class may take (text slots: text ids and [EOS])."""
  table = np.zeros((len(MODALITIES), vocab.size), bool)
  for c, name in enumerate(MODALITIES):
    lo, hi = vocab.range(name)
    table[c, lo:hi] = True
  table[0, vocab.id("[EOS]")] = True
  return table


def text_row(vocab: Vocab, seq_len: int, prefix_ids, suffix_ids=()) -> np.ndarray:
  """[L] ids: prefix, [MASK] up to the suffix, suffix at the end of the row."""
  prefix_ids, suffix_ids = list(prefix_ids), list(suffix_ids)
  n = seq_len - len(prefix_ids) - len(suffix_ids)
  if n < 1:
    raise UserError("--prompt", f"prompt and suffix take {len(prefix_ids) + len(suffix_ids)} tokens but the sequence "
                    f"holds {seq_len}, leaving nothing to generate", "shorten the prompt")
  return np.asarray(prefix_ids + [vocab.mask_id] * n + suffix_ids, np.int32)


def media_row(vocab: Vocab, seq_len: int, media: str, text_ids, n_codes: int) -> np.ndarray:
  """[L] ids of a text -> media pair whose n_codes media codes are [MASK]."""
  if n_codes < 1:
    raise UserError("--length", f"must be >= 1 {media} token, got {n_codes}")
  seq = sequences.pair_sequence(vocab, media, text_ids, np.zeros(n_codes, np.int64), seq_len)
  if seq is None:
    raise UserError("--prompt", f"{len(text_ids)} prompt tokens + {n_codes} {media} tokens + 3 task/boundary tokens "
                    f"exceed the sequence length {seq_len}", "shorten the prompt (or --length)")
  tokens = seq["tokens"].copy()
  lo, hi = vocab.range(media)
  tokens[~seq["prompt"] & (tokens >= lo) & (tokens < hi)] = vocab.mask_id
  return tokens


def build(vocab: Vocab, modality: str, rows: list[np.ndarray], prompts: list[str]) -> Request:
  tokens = np.stack(rows).astype(np.int32)
  classes = np.full(tokens.shape, MODALITIES.index(modality), np.int32)
  return Request(modality, tokens, classes, list(prompts), mask_id=vocab.mask_id)


def text_request(vocab: Vocab, tokenizer, seq_len: int, prompts: list[str], suffix: str = "",
                 copies: int = 1) -> Request:
  suffix_ids = tokenizer.encode(suffix) if suffix else []
  rows = [text_row(vocab, seq_len, tokenizer.encode(p) if p else [], suffix_ids) for p in prompts]
  return build(vocab, "text", [r for r in rows for _ in range(copies)], [p for p in prompts for _ in range(copies)])


def media_request(vocab: Vocab, tokenizer, seq_len: int, media: str, prompts: list[str], lengths: list[int],
                  copies: int = 1) -> Request:
  if not any(p.strip() for p in prompts):
    raise UserError("--prompt", f"{media} generation is conditional and needs a prompt",
                    "e.g. --prompt 'a handwritten digit seven'" if media == "image" else "give a transcript")
  rows = [media_row(vocab, seq_len, media, tokenizer.encode(p), n) for p, n in zip(prompts, lengths)]
  return build(vocab, media, [r for r in rows for _ in range(copies)], [p for p in prompts for _ in range(copies)])


@dataclasses.dataclass(frozen=True)
class AudioLength:
  """n_codes ≈ slope · transcript tokens + intercept, least squares over held-out pairs (rounded to whole frames)."""
  slope: float
  intercept: float
  stages: int = 1

  def __call__(self, n_text_tokens: int, max_codes: int) -> int:
    frames = max(1, round((self.slope * n_text_tokens + self.intercept) / self.stages))
    return int(min(frames * self.stages, max_codes - max_codes % self.stages))

  @classmethod
  def fit(cls, text_lengths, code_lengths, stages: int = 1) -> "AudioLength":
    x, y = np.asarray(text_lengths, float), np.asarray(code_lengths, float)
    if len(x) < 2 or np.ptp(x) == 0:
      return cls(0.0, float(np.mean(y)) if len(y) else 50.0, stages)
    slope, intercept = np.polyfit(x, y, 1)
    return cls(float(slope), float(intercept), stages)


def pair_lengths(rows: dict[str, np.ndarray], vocab: Vocab, media: str) -> tuple[np.ndarray, np.ndarray]:
  """(text tokens, media codes) per t2x pair row of a split (for AudioLength.fit and for matched-length prompts)."""
  lo, hi = vocab.range(media)
  tokens = rows["tokens"]
  codes = ((tokens >= lo) & (tokens < hi)).sum(axis=1)
  text = ((tokens >= 0) & (tokens < vocab.text_size)).sum(axis=1)
  return text, codes
