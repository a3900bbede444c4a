"""Real text: the embedded public-domain corpus and a byte-level BPE tokenizer trained on it.

The tokenizer is trained with HF `tokenizers` to at most `vocab_size` ids (the text range of the joint vocabulary),
saved as a versioned `tokenizer.json` artefact and cached by a hash of (corpus, vocab size, version).
"""
import functools
import hashlib
import json
import lzma
import os
import pathlib

import numpy as np

from mdm_jax.errors import UserError

ASSETS = pathlib.Path(__file__).resolve().parent.parent / "assets"
EMBEDDED_CORPUS = ASSETS / "shakespeare14.jsonl.xz"
TOKENIZER_VERSION = "bpe-bytelevel-v1"


def cache_dir() -> pathlib.Path:
  root = os.environ.get("MDM_LAB_CACHE") or pathlib.Path.home() / ".cache" / "mdm-lab"
  path = pathlib.Path(root)
  path.mkdir(parents=True, exist_ok=True)
  return path


@functools.lru_cache(maxsize=None)
def embedded_documents() -> tuple[tuple[str, str], ...]:
  """(title, text) for each embedded work, in the file's fixed order (Shakespeare, Project Gutenberg)."""
  rows = [json.loads(line) for line in lzma.decompress(EMBEDDED_CORPUS.read_bytes()).decode().splitlines()]
  return tuple((r["title"], r["text"]) for r in rows)


def corpus_digest(texts) -> str:
  h = hashlib.sha256()
  for t in texts:
    h.update(hashlib.sha256(t.encode()).digest())
  return h.hexdigest()[:16]


class TextTokenizer:
  """encode(str) -> list[int] in [0, vocab_size); decode(ids) -> str. Wraps a HF `tokenizers.Tokenizer`."""

  def __init__(self, path: str | pathlib.Path):
    from tokenizers import Tokenizer
    self.path = pathlib.Path(path)
    if not self.path.is_file():
      raise UserError(str(self.path), "tokenizer file not found", "run the trainer once or `mdm-lab data prepare`")
    raw = json.loads(self.path.read_text())
    meta = raw.get("mdm_lab", {})
    if meta.get("version") != TOKENIZER_VERSION:
      raise UserError(str(self.path), f"tokenizer version {meta.get('version')!r}, expected {TOKENIZER_VERSION!r}",
                      "retrain it (delete the file)")
    self.vocab_size = int(meta["vocab_size"])
    self.version = meta["version"]
    self._tok = Tokenizer.from_str(json.dumps({k: v for k, v in raw.items() if k != "mdm_lab"}))

  def encode(self, text: str) -> list[int]:
    return self._tok.encode(text).ids

  def encode_batch(self, texts: list[str]) -> list[list[int]]:
    return [e.ids for e in self._tok.encode_batch(texts)]

  def decode(self, ids) -> str:
    return self._tok.decode([int(i) for i in ids if 0 <= int(i) < self.vocab_size])


def train_text_tokenizer(texts, vocab_size: int, out_path: str | pathlib.Path) -> TextTokenizer:
  """Train byte-level BPE on `texts` with at most `vocab_size` ids and save it (with our version tag)."""
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                special_tokens=[], show_progress=False)
  tok.train_from_iterator(list(texts), trainer=trainer)
  raw = json.loads(tok.to_str())
  raw["mdm_lab"] = {"version": TOKENIZER_VERSION, "vocab_size": vocab_size, "trained_ids": tok.get_vocab_size()}
  out_path = pathlib.Path(out_path)
  out_path.parent.mkdir(parents=True, exist_ok=True)
  tmp = out_path.with_suffix(".tmp")
  tmp.write_text(json.dumps(raw))
  os.replace(tmp, out_path)   # atomic: concurrent runs never see a half-written tokenizer
  return TextTokenizer(out_path)


def cached_text_tokenizer(texts, vocab_size: int) -> TextTokenizer:
  """The tokenizer for (texts, vocab_size), trained once and reused from the cache."""
  key = f"{TOKENIZER_VERSION}-{corpus_digest(texts)}-{vocab_size}"
  path = cache_dir() / "tokenizers" / f"{key}.json"
  if path.is_file():
    return TextTokenizer(path)
  return train_text_tokenizer(texts, vocab_size, path)


def encode_documents(tokenizer: TextTokenizer, texts) -> list[np.ndarray]:
  """Each document as an int32 id array, cached on disk next to its tokenizer."""
  path = tokenizer.path.with_name(tokenizer.path.stem + f"-{corpus_digest(texts)}.npz")
  if path.is_file():
    with np.load(path, allow_pickle=False) as z:
      return [z[f"doc{i}"] for i in range(len(z.files))]
  docs = [np.asarray(ids, np.int32) for ids in tokenizer.encode_batch(list(texts))]
  tmp = path.with_suffix(".tmp.npz")
  np.savez(tmp, **{f"doc{i}": d for i, d in enumerate(docs)})
  os.replace(tmp, path)
  return docs
