import numpy as np

from mdm_jax.data import audio_dsp


def _signal(n=16003, seed=0):
  return np.random.default_rng(seed).normal(size=n).astype(np.float32)


def test_stft_matches_a_direct_dft():
  x = _signal(3000)
  ours = audio_dsp.stft(x, 256, 64)
  padded = np.concatenate([np.zeros(128), x, np.zeros(128 + 64)])
  n = np.arange(256)
  window = 0.5 - 0.5 * np.cos(2 * np.pi * n / 256)  # periodic Hann
  dft = np.exp(-2j * np.pi * np.outer(np.arange(129), n) / 256)
  for t in (0, 7, len(ours) - 1):
    np.testing.assert_allclose(ours[t], dft @ (padded[t * 64:t * 64 + 256] * window), atol=1e-3)
  assert len(ours) == 1 + len(x) // 64


def test_istft_inverts_stft():
  x = _signal()
  for hop in (64, 128, 256):
    np.testing.assert_allclose(audio_dsp.istft(audio_dsp.stft(x, 512, hop), 512, hop, len(x)), x, atol=1e-5)


def test_mel_filterbank_is_htk_triangles():
  fb = audio_dsp.mel_filterbank(40, 512, 16000)
  assert fb.shape == (40, 257) and fb.min() >= 0 and fb.max() <= 1
  freqs = np.fft.rfftfreq(512, 1 / 16000)
  centres_hz = 700 * (10 ** (np.linspace(0, 2595 * np.log10(1 + 8000 / 700), 42)[1:-1] / 2595) - 1)
  peaks = freqs[fb.argmax(1)]  # each filter peaks within one FFT bin of its centre
  assert np.all(np.abs(peaks - centres_hz) <= 16000 / 512)
  # triangles: zero outside (previous centre, next centre)
  edges = np.concatenate([[0], centres_hz, [8000]])
  outside = (freqs[None] <= edges[:-2, None]) | (freqs[None] >= edges[2:, None])
  assert np.all(fb[outside] < 1e-6)


def test_griffin_lim_recovers_magnitude_of_a_chirp():
  t = np.arange(16000) / 16000
  x = np.cos(2 * np.pi * (200 * t + 1400 * t ** 2)).astype(np.float32)  # linear chirp 200 -> 3000 Hz
  target = np.abs(audio_dsp.stft(x, 512, 128))
  convergence = []
  for iters in (0, 32):
    y = audio_dsp.griffin_lim(target, 512, 128, len(x), iters=iters)
    convergence.append(np.linalg.norm(np.abs(audio_dsp.stft(y, 512, 128)) - target) / np.linalg.norm(target))
  assert convergence[1] < 0.5 * convergence[0] and convergence[1] < 0.2


def test_log_spectral_distance_is_analytic_for_a_gain():
  x = _signal()
  assert audio_dsp.log_spectral_distance_db(x, x) == 0.0
  assert abs(audio_dsp.log_spectral_distance_db(x, 2 * x) - 20 * np.log10(2)) < 1e-3


def test_resample_keeps_a_tone():
  t = np.arange(22050) / 22050
  y = audio_dsp.resample(np.sin(2 * np.pi * 440 * t), 22050, 16000)
  assert len(y) == 16000
  np.testing.assert_allclose(y, np.sin(2 * np.pi * 440 * np.arange(16000) / 16000), atol=1e-4)
  high = audio_dsp.resample(np.sin(2 * np.pi * 9000 * t), 22050, 16000)  # above the new Nyquist: removed
  assert np.abs(high).max() < 1e-4
