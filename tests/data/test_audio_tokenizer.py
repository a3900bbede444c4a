import dataclasses

import numpy as np
import pytest

from mdm_jax.data import sources_audio, sources_text
from mdm_jax.data.audio_tokenizer import AudioTokenizer, AudioTokenizerConfig

# Stated bounds on held-out speech (sonnet lines, unseen lines and the same voices; 512 codes at 50 tokens/s).
# Measured on the tiny set: STOI ~0.86, waveform LSD ~7 dB, log-mel RMS error ~4.8 dB.
MIN_STOI, MAX_LSD_DB, MAX_FEATURE_DB = 0.75, 9.0, 6.0


@pytest.fixture(scope="module")
def speech():
  lines = sources_text.speakable_lines(dict(sources_text.embedded_works())["sonnets"])
  train = sources_audio.plan_utterances(lines[:1500], 96, sources_audio.VOICES["tiny"], seed=0)
  held_out = sources_audio.plan_utterances(lines[2000:], 6, sources_audio.VOICES["tiny"], seed=1)
  waves = sources_audio.speak_many(train + held_out, 16000, 4.5, workers=2)
  return [w for w, _ in waves[:96]], [w for w, _ in waves[96:]]


@pytest.fixture(scope="module")
def tokenizer(speech):
  return AudioTokenizer.train(speech[0], AudioTokenizerConfig(codebook_size=512, iters=12))


def test_held_out_speech_is_intelligible_and_under_the_bounds(tokenizer, speech):
  err = tokenizer.reconstruction_error(speech[1])
  assert err["stoi"] >= MIN_STOI and err["waveform_lsd_db"] <= MAX_LSD_DB, err
  assert err["feature_rms_db"] <= MAX_FEATURE_DB, err


def test_token_rate_and_code_ranges(tokenizer, speech):
  wave = speech[1][0]
  codes = tokenizer.encode(wave)
  seconds = len(wave) / 16000
  assert tokenizer.config.tokens_per_second == 50
  assert abs(len(codes) - 50 * seconds) <= 1 and len(codes) == tokenizer.config.num_tokens(len(wave))
  assert codes.dtype == np.int32 and codes.min() >= 0 and codes.max() < 512
  assert len(tokenizer.decode(codes, len(wave))) == len(wave)


def test_residual_stages_use_their_own_id_ranges_and_lower_the_error(speech):
  waves = speech[0][:40]
  one = AudioTokenizer.train(waves, AudioTokenizerConfig(codebook_size=64, iters=8))
  two = AudioTokenizer.train(waves, AudioTokenizerConfig(codebook_size=64, stages=2, iters=8))
  codes = two.encode(speech[1][0]).reshape(-1, 2)
  assert codes[:, 0].max() < 64 <= codes[:, 1].min() and codes[:, 1].max() < 128
  assert two.config.vocab_size == 128 and two.config.tokens_per_second == 100
  e1 = one.reconstruction_error(speech[1][:2], stoi=False)["feature_rms_db"]
  e2 = two.reconstruction_error(speech[1][:2], stoi=False)["feature_rms_db"]
  assert e2 < e1


def test_save_load_and_bad_codes(tokenizer, speech, tmp_path):
  checksum = tokenizer.save(tmp_path / "audio.npz")
  loaded = AudioTokenizer.load(tmp_path / "audio.npz")
  assert loaded.checksum == checksum and loaded.config == tokenizer.config
  np.testing.assert_array_equal(loaded.encode(speech[1][1]), tokenizer.encode(speech[1][1]))
  with pytest.raises(ValueError, match="out of each stage"):
    tokenizer.decode_features(np.array([512]))
  with pytest.raises(ValueError, match="must divide"):
    dataclasses.replace(tokenizer.config, synth_hop=100)
