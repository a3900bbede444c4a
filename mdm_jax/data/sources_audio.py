"""Speech with transcripts: lines of public-domain text spoken by eSpeak NG with several voices, rates and pitches.

Audio is synthesised at prepare time (about 300-900x real time per core), never stored in git. An utterance longer
than `max_seconds` is cut at a word start reported by eSpeak, and its transcript cut at the same word, so audio and
transcript stay aligned.

Reproducibility: eSpeak's output depends on everything the process synthesised before (static generator state that
espeak_Terminate/Initialize does not reset), not only on its random seeds. So utterances are cut into fixed chunks
of `CHUNK`, and each chunk is synthesised in a fresh process forked from a clean fork server (one task per child):
the waveform of an utterance is then a function of its chunk alone, whatever the number of workers or their timing.
The parent process never synthesises.
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


CHUNK = 64  # utterances per fresh synthesis process; part of the data's identity (see module docstring)


@functools.lru_cache(maxsize=2)
def _tokenizer(path: str) -> AudioTokenizer:
  return AudioTokenizer.load(path)


def _speak_chunk(args) -> list:
  """(wave, transcript) per utterance, or (codes, transcript, seconds) when a tokenizer path is given."""
  from threadpoolctl import threadpool_limits  # pylint: disable=import-outside-toplevel
  utts, sample_rate, max_seconds, tokenizer_path = args
  tok = _tokenizer(tokenizer_path) if tokenizer_path else None
  out = []
  with threadpool_limits(1):  # per-utterance matmuls are tiny: BLAS threads only contend (4x slower measured)
    for utt in utts:
      spoken = speak(utt, sample_rate, max_seconds)
      if spoken is None or tok is None:
        out.append(spoken)
      else:
        out.append((tok.encode(spoken[0]), spoken[1], len(spoken[0]) / sample_rate))
  return out


def _map_chunks(utts: list[Utterance], sample_rate: int, max_seconds: float, tokenizer_path: str | None,
                workers: int, progress) -> list:
  chunks = [(utts[i:i + CHUNK], sample_rate, max_seconds, tokenizer_path) for i in range(0, len(utts), CHUNK)]
  ctx = multiprocessing.get_context("forkserver")
  ctx.set_forkserver_preload([__name__, "threadpoolctl"])  # children start with these imported
  results = []
  with ctx.Pool(max(1, workers), maxtasksperchild=1) as pool:  # one chunk per child: every chunk starts clean
    for part in pool.imap(_speak_chunk, chunks):
      results.extend(part)
      if progress:
        progress(len(part))
  return results


def speak_many(utts: list[Utterance], sample_rate: int, max_seconds: float, workers: int = 1,
               progress=None) -> list[tuple[np.ndarray, str] | None]:
  """(waveform, transcript) per utterance, in order; None where nothing fit. `progress(n)` counts done."""
  return _map_chunks(utts, sample_rate, max_seconds, None, workers, progress)


def encode_utterances(utts: list[Utterance], tokenizer_path: str, max_seconds: float, workers: int = 1,
                      progress=None) -> list[tuple[np.ndarray, str, float] | None]:
  """(codes, transcript, seconds) per utterance, in order; only codes cross process boundaries."""
  sample_rate = AudioTokenizer.load(tokenizer_path).config.sample_rate
  return _map_chunks(utts, sample_rate, max_seconds, str(tokenizer_path), workers, progress)
