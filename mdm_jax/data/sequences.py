"""Sequences of the one-stream layout: packed text rows and image-text / audio-text pairs padded to one length.

Each sequence is a dict of [L] arrays (`FIELDS`): tokens int32 (joint-vocabulary ids), modality int8 (0 text,
1 image, 2 audio), segment int32 (1 for the document or pair, 0 on padding; packed text numbers its documents
1, 2, ...), loss_mask bool (False exactly on [PAD]) and prompt bool (the conditioning part of a pair, kept unmasked
in conditional generation).

Pair layouts (caption/transcript first is the generation direction text -> image/audio):
  t2i  [<t2i>] caption <img> codes </img> [PAD]...      i2t  [<i2t>] <img> codes </img> caption [PAD]...
  t2s  [<t2s>] transcript <aud> codes </aud> [PAD]...   s2t  [<s2t>] <aud> codes </aud> transcript [PAD]...
The task token and the text belong to the text modality; boundary tokens and codes to the image/audio modality;
padding carries the pair's media modality, so a row's source is the largest modality id in it.
"""
import numpy as np

from mdm_jax.data.vocab import MODALITIES, Vocab

FIELDS = {"tokens": np.int32, "modality": np.int8, "segment": np.int32, "loss_mask": np.bool_, "prompt": np.bool_}
_PAIR_TOKENS = {"image": ("<img>", "</img>", "<t2i>", "<i2t>"), "audio": ("<aud>", "</aud>", "<t2s>", "<s2t>")}
LAYOUT_NOTES = {
    "pairs": "[task] text <img|aud> codes </img|aud> [PAD]..., one pair per sequence, padded to seq_len",
    "text": "documents joined with [EOS] and cut into rows of seq_len (the lead's pipeline.pack)",
    "modality_of_specials": "task token -> text; boundary tokens -> their media; [PAD] -> the row's media",
    "loss_mask": "False exactly on [PAD]",
    "prompt": "marks the conditioning segment of a pair (task, text, opening boundary for t2x); training masks "
              "every non-pad position (prompt unused in the training loss)",
    "specials_maskable": True,
    "segment": "1 for a pair, 0 on padding; packed text numbers documents from 1 (attention may ignore it)",
}


def pair_sequence(vocab: Vocab, media: str, text_ids, codes, seq_len: int,
                  text_first: bool = True) -> dict[str, np.ndarray] | None:
  """One image-text or audio-text pair laid out and padded to seq_len; None if it does not fit.

  text_ids: text-tokenizer ids in [0, text_size); codes: the media tokenizer's ids in [0, image/audio size).
  """
  if media not in _PAIR_TOKENS:
    raise ValueError(f"media must be 'image' or 'audio', got {media!r}")
  open_tok, close_tok, t2x, x2t = (vocab.id(s) for s in _PAIR_TOKENS[media])
  lo, hi = vocab.range(media)
  text_ids = np.asarray(text_ids, np.int64)
  codes = np.asarray(codes, np.int64)
  if text_ids.size and (text_ids.min() < 0 or text_ids.max() >= vocab.text_size):
    raise ValueError(f"text ids must lie in [0, {vocab.text_size})")
  if codes.size and (codes.min() < 0 or codes.max() >= hi - lo):
    raise ValueError(f"{media} codes must lie in [0, {hi - lo})")
  media_block = np.concatenate([[open_tok], codes + lo, [close_tok]])
  n = 1 + len(text_ids) + len(media_block)
  if n > seq_len:
    return None
  m_text, m_media = 0, MODALITIES.index(media)
  if text_first:
    tokens = np.concatenate([[t2x], text_ids, media_block])
    modality = np.concatenate([np.full(1 + len(text_ids), m_text), np.full(len(media_block), m_media)])
    prompt = np.arange(n) < 2 + len(text_ids)  # task, text and the opening boundary condition the media
  else:
    tokens = np.concatenate([[x2t], media_block, text_ids])
    modality = np.concatenate([[m_text], np.full(len(media_block), m_media), np.full(len(text_ids), m_text)])
    prompt = np.arange(n) < 1 + len(media_block)
  return _pad({"tokens": tokens, "modality": modality, "segment": np.ones(n), "loss_mask": np.ones(n, bool),
               "prompt": prompt}, seq_len, vocab.pad_id, m_media)


def _pad(seq: dict, seq_len: int, pad_id: int, pad_modality: int) -> dict[str, np.ndarray]:
  n = len(seq["tokens"])
  fill = {"tokens": pad_id, "modality": pad_modality, "segment": 0, "loss_mask": False, "prompt": False}
  out = {}
  for name, dtype in FIELDS.items():
    a = np.full(seq_len, fill[name], dtype)
    a[:n] = seq[name]
    out[name] = a
  return out


def text_rows(rows_NxL: np.ndarray, vocab: Vocab) -> dict[str, np.ndarray]:
  """Per-position arrays for packed text rows (no padding): documents numbered from 1 within each row."""
  rows_NxL = np.asarray(rows_NxL, np.int32)
  eos = rows_NxL == vocab.id("[EOS]")
  # a document's [EOS] belongs to it: count the [EOS] tokens strictly before each position
  before = np.cumsum(eos, axis=1) - eos
  return {"tokens": rows_NxL, "modality": np.zeros(rows_NxL.shape, np.int8),
          "segment": (1 + before).astype(np.int32), "loss_mask": rows_NxL != vocab.pad_id,
          "prompt": np.zeros(rows_NxL.shape, bool)}


def stack(sequences: list[dict[str, np.ndarray]], seq_len: int) -> dict[str, np.ndarray]:
  """[N, L] arrays of a list of sequences (empty list -> zero rows)."""
  return {name: (np.stack([s[name] for s in sequences]) if sequences else np.zeros((0, seq_len), dtype))
          for name, dtype in FIELDS.items()}


def row_source(modality_BxL: np.ndarray) -> np.ndarray:
  """Source id of each row (0 text, 1 image-text, 2 audio-text): the largest modality id in it."""
  return np.asarray(modality_BxL).max(axis=-1).astype(np.int8)


def nonpad_tokens(loss_mask_BxL: np.ndarray) -> np.ndarray:
  return np.asarray(loss_mask_BxL).sum(axis=-1)
