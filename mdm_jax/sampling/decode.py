"""Token streams back to text, PNG images and WAV audio, through the run's own tri-modal tokenizers.

A run trained on a prepared directory decodes with that directory's tokenizers (tokenizers/text.json, image.npz,
audio.npz, checked against manifest.json); a run on the embedded corpus has only its cached text tokenizer.
"""
import dataclasses
import json
import pathlib
import wave

import numpy as np

from mdm_jax.data import manifest as manifest_lib
from mdm_jax.data.audio_tokenizer import AudioTokenizer
from mdm_jax.data.image_tokenizer import ImageTokenizer
from mdm_jax.data.text import TextTokenizer
from mdm_jax.data.vocab import Vocab
from mdm_jax.errors import UserError

EOS_MARK = "\n[EOS]\n"   # packed rows join documents with [EOS]; shown as a visible break


@dataclasses.dataclass
class Codecs:
  vocab: Vocab
  text: TextTokenizer
  image: ImageTokenizer | None = None
  audio: AudioTokenizer | None = None

  @classmethod
  def for_config(cls, cfg) -> "Codecs":
    """The tokenizers a run config was trained with (its data source)."""
    if cfg.data.source == "shakespeare":
      from mdm_jax.data import pipeline   # pylint: disable=import-outside-toplevel
      return cls(cfg.vocab, pipeline.load_packed_text(cfg).tokenizer)
    directory = pathlib.Path(cfg.data.source)
    tokenizers = manifest_lib.read(directory)["tokenizers"]
    load = {"image": ImageTokenizer.load, "audio": AudioTokenizer.load}
    media = {m: load[m](directory / tokenizers[m]["file"]) for m in load if m in tokenizers}
    return cls(cfg.vocab, TextTokenizer(directory / tokenizers["text"]["file"]), **media)

  def require(self, modality: str):
    codec = getattr(self, modality)
    if codec is None:
      raise UserError("--modality", f"this run's data has no {modality} tokenizer",
                      "sample a modality the run was trained on")
    return codec


def text_of(ids, vocab: Vocab, tokenizer: TextTokenizer) -> str:
  """Text of an id stream: documents split at [EOS]; image/audio codes and other specials are dropped."""
  ids = np.asarray(ids)
  pieces = np.split(ids, np.flatnonzero(ids == vocab.id("[EOS]")))
  return EOS_MARK.join(tokenizer.decode(p[p < vocab.text_size]) for p in pieces)


def media_codes(tokens_L, vocab: Vocab, media: str) -> np.ndarray:
  """The media tokenizer's codes of a pair row: ids of its range, shifted to start at 0."""
  lo, hi = vocab.range(media)
  tokens_L = np.asarray(tokens_L)
  return (tokens_L[(tokens_L >= lo) & (tokens_L < hi)] - lo).astype(np.int32)


def write_png(path, image_HxWxC: np.ndarray) -> pathlib.Path:
  from PIL import Image   # pylint: disable=import-outside-toplevel
  image_HxWxC = np.asarray(image_HxWxC, np.uint8)
  pixels = image_HxWxC[..., 0] if image_HxWxC.shape[-1] == 1 else image_HxWxC
  Image.fromarray(pixels, "L" if pixels.ndim == 2 else "RGB").save(path)
  return pathlib.Path(path)


def write_wav(path, wave_T: np.ndarray, sample_rate: int) -> pathlib.Path:
  """16-bit PCM mono; the waveform is peak-normalised to -1 dBFS when louder (Griffin-Lim gain is arbitrary)."""
  wave_T = np.asarray(wave_T, np.float64)
  peak = np.max(np.abs(wave_T)) if wave_T.size else 0.0
  if peak > 0.89:
    wave_T = wave_T * (0.89 / peak)
  with wave.open(str(path), "wb") as f:
    f.setnchannels(1)
    f.setsampwidth(2)
    f.setframerate(sample_rate)
    f.writeframes(np.round(wave_T * 32767).astype("<i2").tobytes())
  return pathlib.Path(path)


def write_samples(out_dir, modality: str, tokens_BxL: np.ndarray, prompts: list[str], codecs: Codecs,
                  extra: list[dict] | None = None) -> list[dict]:
  """One file per row (text_000.txt, image_000.png or audio_000.wav) and samples.jsonl describing them."""
  out_dir = pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  records = []
  for i, (row, prompt) in enumerate(zip(tokens_BxL, prompts)):
    record = {"index": i, "prompt": prompt, "tokens": np.asarray(row).tolist()}
    if modality == "text":
      record["text"] = text_of(row, codecs.vocab, codecs.text)
      path = out_dir / f"text_{i:03d}.txt"
      path.write_text(record["text"])
    elif modality == "image":
      tok = codecs.require("image")
      image = tok.decode(media_codes(row, codecs.vocab, "image")[None])[0]
      path = write_png(out_dir / f"image_{i:03d}.png", image)
      record["shape"] = list(image.shape)
    else:
      tok = codecs.require("audio")
      samples = tok.decode(media_codes(row, codecs.vocab, "audio"))
      path = write_wav(out_dir / f"audio_{i:03d}.wav", samples, tok.config.sample_rate)
      record.update(samples=int(len(samples)), sample_rate=tok.config.sample_rate)
    record["file"] = path.name
    records.append({**record, **(extra[i] if extra else {})})
  with open(out_dir / "samples.jsonl", "w") as f:
    for record in records:
      f.write(json.dumps(record) + "\n")
  return records
