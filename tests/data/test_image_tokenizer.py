import numpy as np
import pytest

from mdm_jax.data import image_tokenizer, sources_images
from mdm_jax.data.image_tokenizer import ImageTokenizer, ImageTokenizerConfig

# Stated bound on held-out digits (embedded MNIST, 4x4 patches, 256 codes): measured ~23 dB PSNR, MSE ~0.005.
MIN_PSNR_DB, MAX_MSE = 20.0, 0.01


@pytest.fixture(scope="module")
def digits():
  images, labels = sources_images.embedded_mnist()
  return images[:900], images[900:], labels


@pytest.fixture(scope="module")
def tokenizer(digits):
  return ImageTokenizer.train(digits[0], ImageTokenizerConfig(codebook_size=256, iters=15))


def test_patches_are_raster_order_and_invert():
  x = np.random.default_rng(0).integers(0, 256, (2, 8, 12, 3), dtype=np.uint8)
  p = image_tokenizer.to_patches(x, 4)
  assert p.shape == (2, 6, 48)
  np.testing.assert_array_equal(p[1, 4], x[1, 4:8, 4:8].reshape(-1))  # row 1, column 1 of a 2x3 patch grid
  np.testing.assert_array_equal(image_tokenizer.from_patches(p, 8, 12, 3, 4), x)


def test_held_out_reconstruction_is_under_the_bound(tokenizer, digits):
  err = tokenizer.reconstruction_error(digits[1])
  assert err["psnr_db"] >= MIN_PSNR_DB and err["mse"] <= MAX_MSE, err
  x = digits[1].astype(np.float64) / 255  # independent recomputation of the reported MSE
  assert abs(np.mean((x - tokenizer.decode(tokenizer.encode(digits[1])) / 255.0) ** 2) - err["mse"]) < 1e-9


def test_codes_shape_range_and_recognisable_decode(tokenizer, digits):
  codes = tokenizer.encode(digits[1])
  assert codes.shape == (100, 49) and codes.dtype == np.int32 and 0 <= codes.min() and codes.max() < 256
  # recognisable: each reconstruction is closer to its own original than to any other held-out digit
  rec = tokenizer.decode(codes).reshape(100, -1).astype(np.float64)
  orig = digits[1].reshape(100, -1).astype(np.float64)
  dist = ((rec[:, None] - orig[None]) ** 2).sum(-1)
  assert (dist.argmin(1) == np.arange(100)).all()


def test_save_load_gives_identical_codes(tokenizer, digits, tmp_path):
  checksum = tokenizer.save(tmp_path / "image.npz")
  loaded = ImageTokenizer.load(tmp_path / "image.npz")
  assert loaded.checksum == checksum and loaded.config == tokenizer.config
  np.testing.assert_array_equal(loaded.encode(digits[1]), tokenizer.encode(digits[1]))


def test_bad_inputs(tokenizer):
  with pytest.raises(ValueError, match="expected images"):
    tokenizer.encode(np.zeros((1, 28, 28, 3), np.uint8))
  with pytest.raises(ValueError, match="must lie in"):
    tokenizer.decode(np.full((1, 49), 256))
  with pytest.raises(ValueError, match="must divide"):
    ImageTokenizerConfig(patch=5)
