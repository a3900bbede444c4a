"""A discrete image tokenizer: a k-means codebook over non-overlapping pixel patches (VQ, no neural network).

A 28x28 image with 4x4 patches becomes 49 codes in raster order; decoding pastes each code's centroid patch back,
so the reconstruction is recognisable and its error is measurable. Pixels are scaled to [0, 1] for training and for
the reported MSE; PSNR uses a peak of 1.
"""
import dataclasses

import numpy as np

from mdm_jax.data import artefacts, kmeans

KIND, VERSION = "image_vq", 1


@dataclasses.dataclass(frozen=True)
class ImageTokenizerConfig:
  height: int = 28
  width: int = 28
  channels: int = 1
  patch: int = 4
  codebook_size: int = 256
  iters: int = 20
  seed: int = 0

  def __post_init__(self):
    if self.height % self.patch or self.width % self.patch:
      raise ValueError(f"patch {self.patch} must divide the image size {self.height}x{self.width}")

  @property
  def tokens_per_image(self) -> int:
    return (self.height // self.patch) * (self.width // self.patch)


def to_patches(images_NxHxWxC: np.ndarray, patch: int) -> np.ndarray:
  """[N, H, W, C] -> [N, (H/p)*(W/p), p*p*C], patches in raster order."""
  n, h, w, c = images_NxHxWxC.shape
  x = images_NxHxWxC.reshape(n, h // patch, patch, w // patch, patch, c)
  return x.transpose(0, 1, 3, 2, 4, 5).reshape(n, (h // patch) * (w // patch), patch * patch * c)


def from_patches(patches_NxTxP: np.ndarray, height: int, width: int, channels: int, patch: int) -> np.ndarray:
  n = patches_NxTxP.shape[0]
  x = patches_NxTxP.reshape(n, height // patch, width // patch, patch, patch, channels)
  return x.transpose(0, 1, 3, 2, 4, 5).reshape(n, height, width, channels)


class ImageTokenizer:
  """encode(uint8 [N,H,W,C]) -> int32 [N, tokens_per_image] codes in [0, codebook_size); decode does the inverse."""

  def __init__(self, config: ImageTokenizerConfig, codebook_KxP: np.ndarray, checksum: str = ""):
    self.config, self.codebook_KxP, self.checksum = config, np.asarray(codebook_KxP, np.float32), checksum

  @classmethod
  def train(cls, images_NxHxWxC: np.ndarray, config: ImageTokenizerConfig) -> "ImageTokenizer":
    patches = to_patches(_check(images_NxHxWxC, config), config.patch).reshape(-1, config.patch ** 2 * config.channels)
    book = kmeans.kmeans(patches / 255.0, config.codebook_size, iters=config.iters,
                         seed=config.seed)
    return cls(config, book)

  def encode(self, images_NxHxWxC: np.ndarray) -> np.ndarray:
    c = self.config
    patches = to_patches(_check(images_NxHxWxC, c), c.patch) / 255.0
    n, t, p = patches.shape
    return kmeans.assign(patches.reshape(n * t, p), self.codebook_KxP).reshape(n, t)

  def decode_float(self, codes_NxT: np.ndarray) -> np.ndarray:
    """Reconstruction in [0, 1], float32 [N, H, W, C]."""
    c = self.config
    codes_NxT = np.asarray(codes_NxT)
    if codes_NxT.ndim != 2 or codes_NxT.shape[1] != c.tokens_per_image:
      raise ValueError(f"expected codes [N, {c.tokens_per_image}], got {codes_NxT.shape}")
    if codes_NxT.size and (codes_NxT.min() < 0 or codes_NxT.max() >= c.codebook_size):
      raise ValueError(f"image codes must lie in [0, {c.codebook_size})")
    return from_patches(self.codebook_KxP[codes_NxT], c.height, c.width, c.channels, c.patch)

  def decode(self, codes_NxT: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(self.decode_float(codes_NxT) * 255.0), 0, 255).astype(np.uint8)

  def reconstruction_error(self, images_NxHxWxC: np.ndarray) -> dict[str, float]:
    """MSE on the [0, 1] scale and PSNR (dB, peak 1) of encode -> decode, averaged over pixels."""
    x = np.asarray(images_NxHxWxC, np.float32) / 255.0
    y = self.decode(self.encode(images_NxHxWxC)).astype(np.float32) / 255.0
    mse = float(np.mean((x - y) ** 2))
    return {"mse": mse, "psnr_db": float(10.0 * np.log10(1.0 / max(mse, 1e-12))), "images": int(len(x))}

  def save(self, path) -> str:
    self.checksum = artefacts.save(path, KIND, VERSION, {"config": dataclasses.asdict(self.config)},
                                   {"codebook": self.codebook_KxP})
    return self.checksum

  @classmethod
  def load(cls, path) -> "ImageTokenizer":
    header, arrays = artefacts.load(path, KIND, VERSION)
    return cls(ImageTokenizerConfig(**header["config"]), arrays["codebook"], header["checksum"])


def _check(images: np.ndarray, c: ImageTokenizerConfig) -> np.ndarray:
  images = np.asarray(images)
  if images.ndim != 4 or images.shape[1:] != (c.height, c.width, c.channels):
    raise ValueError(f"expected images [N, {c.height}, {c.width}, {c.channels}], got {images.shape}")
  return images
