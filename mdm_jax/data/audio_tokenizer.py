"""A discrete audio tokenizer: residual-VQ codebooks over log-mel frames, decoded with Griffin-Lim.

Encode: waveform at `sample_rate` -> log-mel frames every `hop` samples (20 ms at 16 kHz, window 32 ms) -> `stages`
codes per frame from a residual k-means VQ, flattened frame-major ([f0s0, f0s1, f1s0, ...]); so the token rate is
stages * sample_rate / hop per second. Codes of stage s occupy [s*K, (s+1)*K) of the tokenizer's range, so each
stage has its own embeddings in the joint vocabulary.
Decode: codes -> log-mel frames, linearly interpolated in time down to `synth_hop` (Griffin-Lim needs >= 75 %
overlap to work well) -> linear magnitude by the filterbank's pseudo-inverse -> Griffin-Lim phase -> waveform.
"""
import dataclasses

import numpy as np

from mdm_jax.data import artefacts, audio_dsp, kmeans

KIND, VERSION = "audio_rvq_logmel", 1


@dataclasses.dataclass(frozen=True)
class AudioTokenizerConfig:
  sample_rate: int = 16000
  n_fft: int = 512
  hop: int = 320
  n_mels: int = 64
  stages: int = 1
  codebook_size: int = 512
  synth_hop: int = 128
  griffin_lim_iters: int = 32
  log_floor: float = 1e-5
  iters: int = 20
  seed: int = 0

  def __post_init__(self):
    if self.n_fft % self.synth_hop:
      raise ValueError(f"synth_hop {self.synth_hop} must divide n_fft {self.n_fft}")

  @property
  def vocab_size(self) -> int:
    """Ids the tokenizer uses: one range of codebook_size per stage."""
    return self.stages * self.codebook_size

  @property
  def tokens_per_second(self) -> float:
    return self.stages * self.sample_rate / self.hop

  def num_tokens(self, num_samples: int) -> int:
    return self.stages * audio_dsp.num_frames(num_samples, self.hop)


class AudioTokenizer:
  """encode(float waveform) -> int32 codes in [0, vocab_size); decode(codes) -> float32 waveform."""

  def __init__(self, config: AudioTokenizerConfig, books_SxKxM: np.ndarray, checksum: str = ""):
    self.config, self.books_SxKxM, self.checksum = config, np.asarray(books_SxKxM, np.float32), checksum
    self._mel_MxF = audio_dsp.mel_filterbank(config.n_mels, config.n_fft, config.sample_rate)
    self._unmel_FxM = np.linalg.pinv(self._mel_MxF).astype(np.float32)

  def features(self, wave: np.ndarray) -> np.ndarray:
    """Log-mel frames [T, n_mels] (natural log of mel-weighted STFT magnitude)."""
    c = self.config
    magnitude = np.abs(audio_dsp.stft(wave, c.n_fft, c.hop)).astype(np.float64)  # float64: see kmeans.py
    return np.log(np.maximum(magnitude @ self._mel_MxF.T.astype(np.float64), c.log_floor))

  @classmethod
  def train(cls, waves: list[np.ndarray], config: AudioTokenizerConfig) -> "AudioTokenizer":
    probe = cls(config, np.zeros((config.stages, config.codebook_size, config.n_mels), np.float32))
    frames = np.concatenate([probe.features(w) for w in waves])
    books = kmeans.residual_kmeans(frames, config.codebook_size, config.stages, iters=config.iters, seed=config.seed)
    return cls(config, books)

  def encode(self, wave: np.ndarray) -> np.ndarray:
    codes_TxS = kmeans.residual_encode(self.features(wave), self.books_SxKxM)
    return (codes_TxS + self.config.codebook_size * np.arange(self.config.stages)).reshape(-1).astype(np.int32)

  def decode_features(self, codes: np.ndarray) -> np.ndarray:
    c = self.config
    codes = np.asarray(codes)
    if codes.ndim != 1 or len(codes) % c.stages:
      raise ValueError(f"expected a flat code sequence whose length is a multiple of {c.stages} stages")
    codes_TxS = codes.reshape(-1, c.stages) - c.codebook_size * np.arange(c.stages)
    if codes_TxS.size and (codes_TxS.min() < 0 or codes_TxS.max() >= c.codebook_size):
      raise ValueError(f"audio codes out of each stage's range (stage s uses [s*{c.codebook_size}, (s+1)*...))")
    return kmeans.residual_decode(codes_TxS, self.books_SxKxM)

  def decode(self, codes: np.ndarray, num_samples: int | None = None) -> np.ndarray:
    c = self.config
    logmel_TxM = self.decode_features(codes)
    t = len(logmel_TxM)
    length = num_samples if num_samples is not None else (t - 1) * c.hop
    n_fine = audio_dsp.num_frames(length, c.synth_hop)
    positions = np.minimum(np.arange(n_fine) * (c.synth_hop / c.hop), t - 1)  # in units of token frames
    lo = np.floor(positions).astype(int)
    hi = np.minimum(lo + 1, t - 1)
    w = (positions - lo)[:, None].astype(np.float32)
    fine_TxM = (1 - w) * logmel_TxM[lo] + w * logmel_TxM[hi]
    magnitude = np.maximum(np.exp(fine_TxM) @ self._unmel_FxM.T, 0.0)
    return audio_dsp.griffin_lim(magnitude, c.n_fft, c.synth_hop, length, iters=c.griffin_lim_iters, seed=c.seed)

  def reconstruction_error(self, waves: list[np.ndarray], stoi: bool = True) -> dict[str, float]:
    """Held-out error of encode -> decode.

    feature_rms_db: RMS dB error of the log-mel frames (the VQ alone); waveform_lsd_db: log-spectral distance of the
    Griffin-Lim waveform to the input; stoi: short-time objective intelligibility (pystoi; 1 = identical).
    """
    db = 20.0 / np.log(10.0)
    feature_err, lsd, intelligibility = [], [], []
    for wave in waves:
      codes = self.encode(wave)
      feature_err.append(db * np.sqrt(np.mean((self.features(wave) - self.decode_features(codes)) ** 2)))
      rebuilt = self.decode(codes, len(wave))
      lsd.append(audio_dsp.log_spectral_distance_db(wave, rebuilt))
      if stoi:
        from pystoi import stoi as stoi_fn  # pylint: disable=import-outside-toplevel
        intelligibility.append(stoi_fn(wave, rebuilt, self.config.sample_rate, extended=False))
    out = {"feature_rms_db": float(np.mean(feature_err)), "waveform_lsd_db": float(np.mean(lsd)),
           "utterances": len(waves), "seconds": float(sum(len(w) for w in waves) / self.config.sample_rate)}
    if stoi:
      out["stoi"] = float(np.mean(intelligibility))
    return out

  def save(self, path) -> str:
    self.checksum = artefacts.save(path, KIND, VERSION, {"config": dataclasses.asdict(self.config)},
                                   {"codebooks": self.books_SxKxM})
    return self.checksum

  @classmethod
  def load(cls, path) -> "AudioTokenizer":
    header, arrays = artefacts.load(path, KIND, VERSION)
    return cls(AudioTokenizerConfig(**header["config"]), arrays["codebooks"], header["checksum"])
