"""Signal processing for the audio tokenizer, in numpy: STFT/ISTFT, a mel filterbank, Griffin-Lim, resampling, and
the log-spectral distance used to report reconstruction error.

Frames are centred (the signal is padded by n_fft/2 on both sides) with a periodic Hann window; the inverse is
weighted overlap-add divided by the summed squared window, so istft(stft(x)) == x wherever the window overlaps.
"""
import math

import numpy as np


def hann(n_fft: int) -> np.ndarray:
  return (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)


def num_frames(num_samples: int, hop: int) -> int:
  return 1 + num_samples // hop


def stft(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
  """Complex spectrogram [frames, n_fft//2 + 1] of a 1-D signal, frames centred at multiples of `hop`."""
  x = np.asarray(x, np.float32)
  padded = np.pad(x, (n_fft // 2, n_fft // 2 + hop))  # the extra hop makes the last frame fully defined
  frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop][:num_frames(len(x), hop)]
  return np.fft.rfft(frames * hann(n_fft), axis=-1)


def istft(spec_TxF: np.ndarray, n_fft: int, hop: int, length: int) -> np.ndarray:
  """Weighted overlap-add inverse of `stft`, cut to `length` samples. Needs n_fft to be a multiple of hop."""
  if n_fft % hop:
    raise ValueError(f"n_fft {n_fft} must be a multiple of hop {hop}")
  window = hann(n_fft)
  frames_TxN = np.fft.irfft(spec_TxF, n=n_fft, axis=-1).astype(np.float32) * window
  t, k = len(frames_TxN), n_fft // hop
  out = np.zeros(hop * (t - 1 + k), np.float32)
  norm = np.zeros_like(out)
  pieces = frames_TxN.reshape(t, k, hop)
  win_sq = (window ** 2).reshape(k, hop)
  for j in range(k):  # the j-th hop-sized piece of every frame lands on one contiguous, non-overlapping run
    out[j * hop:(j + t) * hop] += pieces[:, j].reshape(-1)
    norm[j * hop:(j + t) * hop] += np.tile(win_sq[j], t)
  out /= np.maximum(norm, 1e-8)
  return _fit_length(out[n_fft // 2:], length)


def _fit_length(x: np.ndarray, length: int) -> np.ndarray:
  return x[:length] if len(x) >= length else np.pad(x, (0, length - len(x)))


def hz_to_mel(f):
  return 2595.0 * np.log10(1.0 + np.asarray(f, np.float64) / 700.0)


def mel_to_hz(m):
  return 700.0 * (10.0 ** (np.asarray(m, np.float64) / 2595.0) - 1.0)


def mel_filterbank(n_mels: int, n_fft: int, sample_rate: int) -> np.ndarray:
  """[n_mels, n_fft//2 + 1] triangular filters, peak 1, centres evenly spaced on the HTK mel scale over 0..Nyquist."""
  edges_hz = mel_to_hz(np.linspace(0.0, hz_to_mel(sample_rate / 2), n_mels + 2))
  bins_hz = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
  lo, mid, hi = edges_hz[:-2, None], edges_hz[1:-1, None], edges_hz[2:, None]
  rise = (bins_hz[None] - lo) / (mid - lo)
  fall = (hi - bins_hz[None]) / (hi - mid)
  return np.clip(np.minimum(rise, fall), 0.0, None).astype(np.float32)


def griffin_lim(magnitude_TxF: np.ndarray, n_fft: int, hop: int, length: int, iters: int = 32,
                seed: int = 0) -> np.ndarray:
  """Waveform whose STFT magnitude approximates the target (Griffin & Lim 1984), from a seeded random phase."""
  rng = np.random.default_rng(seed)
  magnitude_TxF = np.asarray(magnitude_TxF, np.float32)
  spec = magnitude_TxF * np.exp(2j * np.pi * rng.random(magnitude_TxF.shape)).astype(np.complex64)
  for _ in range(iters):
    estimate = stft(istft(spec, n_fft, hop, length), n_fft, hop)
    spec = magnitude_TxF * np.exp(1j * np.angle(estimate)).astype(np.complex64)
  return istft(spec, n_fft, hop, length)


def _next_smooth(n: int) -> int:
  """Smallest integer >= n whose prime factors are 2, 3 and 5 (fast FFT sizes)."""
  best = 1 << max(0, (n - 1).bit_length())
  p5 = 1
  while p5 < best:
    p35 = p5
    while p35 < best:
      p2 = p35 * (1 << max(0, (-(-n // p35) - 1).bit_length()))  # smallest p35 * 2^k >= n
      best = min(best, p2)
      p35 *= 3
    p5 *= 5
  return best


def resample(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
  """Band-limited resampling by FFT: keep the spectrum below both Nyquist rates, re-synthesise at the new rate.

  The input is zero-padded to down * m samples (m with only factors 2, 3, 5) so both FFTs are fast and the output
  length is exact; utterances start and end in silence, so the implied periodicity is harmless.
  (numpy only: scipy.signal takes seconds to import in every fresh synthesis process.)
  """
  x = np.asarray(x, np.float64)
  if rate_in == rate_out or len(x) == 0:
    return x.astype(np.float32)
  g = math.gcd(rate_in, rate_out)
  up, down = rate_out // g, rate_in // g
  m = _next_smooth(-(-len(x) // down))
  n_in, n_out = down * m, up * m
  spectrum = np.fft.rfft(x, n_in)
  keep = min(len(spectrum), n_out // 2 + 1)
  out = np.zeros(n_out // 2 + 1, np.complex128)
  out[:keep] = spectrum[:keep]
  if keep == n_out // 2 + 1 and n_out % 2 == 0:
    out[-1] = out[-1].real  # the new Nyquist bin of an even-length real signal is real
  y = np.fft.irfft(out, n_out) * (n_out / n_in)
  return y[:int(round(len(x) * up / down))].astype(np.float32)


def log_spectral_distance_db(reference: np.ndarray, estimate: np.ndarray, n_fft: int = 512, hop: int = 128,
                             floor_db: float = -80.0) -> float:
  """Mean over frames of the RMS (over frequency) difference of the dB magnitude spectra.

  Both spectra are floored at `floor_db` below the reference's peak, so silence does not dominate the average.
  """
  n = min(len(reference), len(estimate))
  ref = 20.0 * np.log10(np.abs(stft(reference[:n], n_fft, hop)) + 1e-12)
  est = 20.0 * np.log10(np.abs(stft(estimate[:n], n_fft, hop)) + 1e-12)
  floor = ref.max() + floor_db
  diff = np.maximum(ref, floor) - np.maximum(est, floor)
  return float(np.mean(np.sqrt(np.mean(diff ** 2, axis=1))))
