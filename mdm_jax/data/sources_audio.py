"""Speech with transcripts: lines of public-domain text spoken by eSpeak NG with several voices, rates and pitches.

Audio is synthesised at prepare time (about 300-900x real time per core), never stored in git. An utterance longer
than `max_seconds` is cut at a word start reported by eSpeak, and its transcript cut at the same word, so audio and
transcript stay aligned. Encoding runs in worker processes (eSpeak is one synthesizer per process), each loading the
saved audio tokenizer, so only codes cross process boundaries.
"""
import dataclasses
import functools
import multiprocessing

import numpy as np

from mdm_jax.data import audio_dsp, espeak_tts
from mdm_jax.data.audio_tokenizer import AudioTokenizer

LICENCES = {
    "espeak-ng": {"package": "espeakng-loader 0.2.4 (installed, not vendored)", "package_licence": "none in metadata",
                  "data_licence": "eSpeak NG library and voices GPL-3.0-or-later; speech is generated output",
                  "note": "transcripts are public-domain text"},
}
# (voice, pitch); '+f3', '+m3' are eSpeak variants of the base voice
VOICES = {
    "tiny": (("en-us", 50), ("en", 45), ("en-us+f3", 60)),
    "cpu": (("en-us", 50), ("en", 45), ("en-gb-scotland", 50), ("en-029", 50), ("en-us+f3", 60), ("en-us+m3", 40)),
}
RATES_WPM = (150, 200)


@dataclasses.dataclass(frozen=True)
class Utterance:
  text: str
  voice: str
  rate: int
  pitch: int


def plan_utterances(lines: list[str], count: int, voices, seed: int) -> list[Utterance]:
  """`count` utterances: distinct lines while they last, each with a random voice, rate and pitch jitter."""
  rng = np.random.default_rng(seed)
  picks = rng.choice(len(lines), count, replace=count > len(lines))
  out = []
  for i in picks:
    voice, pitch = voices[rng.integers(len(voices))]
    out.append(Utterance(lines[i], voice, int(rng.integers(*RATES_WPM, endpoint=True)),
                         int(np.clip(pitch + rng.integers(-8, 9), 0, 100))))
  return out


def speak(utt: Utterance, sample_rate: int, max_seconds: float) -> tuple[np.ndarray, str] | None:
  """(float32 waveform at sample_rate, transcript) cut to max_seconds at a word boundary; None if nothing fits."""
  audio, words = espeak_tts.synth(utt.text, utt.voice, utt.rate, utt.pitch)
  native = espeak_tts.sample_rate()
  transcript = utt.text
  limit = int(max_seconds * native)
  if len(audio) > limit:
    cuts = [(offset, start) for _, offset, start in words[1:] if start <= limit]  # cut before a later word
    if not cuts:
      return None
    offset, start = cuts[-1]
    audio, transcript = audio[:start], utt.text[:offset].rstrip(" ,;:-")
  if not transcript or len(audio) == 0:
    return None
  return audio_dsp.resample(audio.astype(np.float32) / 32768.0, native, sample_rate), transcript


@functools.lru_cache(maxsize=2)
def _tokenizer(path: str) -> AudioTokenizer:
  return AudioTokenizer.load(path)


def _encode_chunk(args) -> list[tuple[np.ndarray, str, float] | None]:
  utts, tokenizer_path, max_seconds = args
  tok = _tokenizer(tokenizer_path)
  out = []
  for utt in utts:
    spoken = speak(utt, tok.config.sample_rate, max_seconds)
    out.append(None if spoken is None else
               (tok.encode(spoken[0]), spoken[1], len(spoken[0]) / tok.config.sample_rate))
  return out


def encode_utterances(utts: list[Utterance], tokenizer_path: str, max_seconds: float, workers: int = 1,
                      progress=None, chunk: int = 64) -> list[tuple[np.ndarray, str, float] | None]:
  """(codes, transcript, seconds) per utterance, in order; None where nothing fit. `progress(n)` counts done."""
  chunks = [(utts[i:i + chunk], str(tokenizer_path), max_seconds) for i in range(0, len(utts), chunk)]
  results = []
  if workers <= 1:
    mapped = map(_encode_chunk, chunks)
  else:  # spawn: every worker starts its own eSpeak instead of inheriting the parent's library state
    pool = multiprocessing.get_context("spawn").Pool(workers)
    mapped = pool.imap(_encode_chunk, chunks)
  try:
    for part in mapped:
      results.extend(part)
      if progress:
        progress(len(part))
  finally:
    if workers > 1:
      pool.close()
      pool.join()
  return results
