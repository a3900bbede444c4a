"""eSpeak NG through ctypes, and speech sources built on it. Synthesis here runs in fresh worker processes only
(sources_audio), except the smallest direct checks, so the parent's state never leaks into reproducibility tests."""
import numpy as np
import pytest

from mdm_jax.data import espeak_tts, sources_audio
from mdm_jax.data.sources_audio import Utterance

LINE = "Shall I compare thee to a summer's day, thou art more lovely"


def test_synth_gives_int16_speech_with_word_times():
  audio, words = espeak_tts.synth(LINE, "en-us", 175)
  assert audio.dtype == np.int16 and espeak_tts.sample_rate() == 22050
  seconds = len(audio) / 22050
  assert 2.0 < seconds < 6.0  # 12 words at 175 wpm is ~4 s
  assert [w for w, _, _ in words][:3] == ["Shall", "I", "compare"]
  starts = [s for _, _, s in words]
  assert starts == sorted(starts) and starts[-1] < len(audio)
  assert all(LINE[offset:offset + len(w)] == w for w, offset, _ in words)
  rms = np.sqrt(np.mean(audio.astype(np.float64) ** 2))
  assert rms > 500  # audible speech, not silence


def test_unknown_voice_is_refused():
  with pytest.raises(ValueError, match="unknown eSpeak voice"):
    espeak_tts.set_voice("no-such-voice")


def test_speak_cuts_audio_and_transcript_at_the_same_word():
  utt = Utterance(LINE, "en-us", 175, 50)
  wave, transcript = sources_audio.speak_many([utt], 16000, max_seconds=1.5)[0]
  assert len(wave) <= 1.5 * 16000
  assert LINE.startswith(transcript) and 1 <= len(transcript.split()) < len(LINE.split())
  full_wave, full_transcript = sources_audio.speak_many([utt], 16000, max_seconds=30)[0]
  assert full_transcript == LINE and len(full_wave) > len(wave)


def test_speech_is_reproducible_whatever_the_worker_count():
  lines = ["From fairest creatures we desire increase", "That thereby beauty's rose might never die",
           "But as the riper should by time decease"]
  utts = sources_audio.plan_utterances(lines, sources_audio.CHUNK + 6, sources_audio.VOICES["tiny"], seed=0)
  one = sources_audio.speak_many(utts, 16000, 3.0, workers=1)
  two = sources_audio.speak_many(utts, 16000, 3.0, workers=2)
  assert all(np.array_equal(a[0], b[0]) and a[1] == b[1] for a, b in zip(one, two))


def test_plan_utterances_is_seeded_and_uses_the_voices():
  lines = [f"line number {w}" for w in ("one", "two", "three", "four")]
  a = sources_audio.plan_utterances(lines, 50, sources_audio.VOICES["tiny"], seed=3)
  assert a == sources_audio.plan_utterances(lines, 50, sources_audio.VOICES["tiny"], seed=3)
  assert {u.voice for u in a} == {v for v, _ in sources_audio.VOICES["tiny"]}
  assert all(sources_audio.RATES_WPM[0] <= u.rate <= sources_audio.RATES_WPM[1] for u in a)
