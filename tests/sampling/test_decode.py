"""Decoded files open with standard readers and have the tokenizers' shapes."""
import wave

import numpy as np
from PIL import Image

from mdm_jax.data.audio_tokenizer import AudioTokenizer, AudioTokenizerConfig
from mdm_jax.data.image_tokenizer import ImageTokenizer, ImageTokenizerConfig
from mdm_jax.data.vocab import Vocab
from mdm_jax.sampling import decode, requests


class _Bytes:
  """A real byte-level stand-in for the BPE tokenizer (ids are bytes): decode must receive only text ids."""
  def encode(self, text):
    return list(text.encode())

  def decode(self, ids):
    assert all(0 <= i < 256 for i in ids)
    return bytes(int(i) for i in ids).decode()


def _codecs(image_cfg, audio_cfg):
  vocab = Vocab(256, image_cfg.codebook_size, audio_cfg.vocab_size)
  rng = np.random.default_rng(0)
  image = ImageTokenizer(image_cfg, rng.uniform(0, 1, (image_cfg.codebook_size, image_cfg.patch ** 2 *
                                                       image_cfg.channels)))
  audio = AudioTokenizer(audio_cfg, rng.normal(-3, 1, (audio_cfg.stages, audio_cfg.codebook_size, audio_cfg.n_mels)))
  return decode.Codecs(vocab, _Bytes(), image, audio)


def test_png_and_wav_files_open_with_the_expected_shapes(tmp_path):
  image_cfg = ImageTokenizerConfig(height=12, width=8, channels=3, patch=4, codebook_size=5)
  audio_cfg = AudioTokenizerConfig(stages=2, codebook_size=4, griffin_lim_iters=2)
  codecs = _codecs(image_cfg, audio_cfg)
  vocab, rng = codecs.vocab, np.random.default_rng(1)
  image_row = requests.media_row(vocab, 40, "image", [104, 105], image_cfg.tokens_per_image)
  audio_row = requests.media_row(vocab, 40, "audio", [104, 105], 10)
  lo_i, lo_a = vocab.range("image")[0], vocab.range("audio")[0]
  image_row[image_row == vocab.mask_id] = lo_i + rng.integers(0, 5, image_cfg.tokens_per_image)
  audio_row[audio_row == vocab.mask_id] = lo_a + np.tile([0, 4 + 1], 5)   # stage 0 code 0, stage 1 code 1
  records = decode.write_samples(tmp_path / "img", "image", image_row[None], ["hi"], codecs)
  with Image.open(tmp_path / "img" / records[0]["file"]) as im:
    assert im.size == (8, 12) and im.mode == "RGB"
  records = decode.write_samples(tmp_path / "aud", "audio", audio_row[None], ["hi"], codecs)
  with wave.open(str(tmp_path / "aud" / records[0]["file"])) as w:
    frames = 10 // audio_cfg.stages
    assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, audio_cfg.sample_rate)
    assert w.getnframes() == (frames - 1) * audio_cfg.hop
  assert (tmp_path / "aud" / "samples.jsonl").read_text().count("\n") == 1


def test_text_is_split_into_documents_at_eos_and_other_ids_are_dropped(tmp_path):
  codecs = _codecs(ImageTokenizerConfig(codebook_size=2), AudioTokenizerConfig(codebook_size=2))
  vocab = codecs.vocab
  row = np.array(list(b"ab") + [vocab.image_start, vocab.id("[EOS]")] + list(b"cd") + [vocab.pad_id])
  assert decode.text_of(row, vocab, codecs.text) == "ab" + decode.EOS_MARK + "cd"
  decode.write_samples(tmp_path, "text", row[None], [""], codecs)
  assert (tmp_path / "text_000.txt").read_text() == "ab" + decode.EOS_MARK + "cd"


def test_grayscale_png_round_trips_its_pixels(tmp_path):
  pixels = np.arange(28 * 28, dtype=np.uint8).reshape(28, 28, 1)
  with Image.open(decode.write_png(tmp_path / "x.png", pixels)) as im:
    assert im.mode == "L"
    np.testing.assert_array_equal(np.asarray(im), pixels[..., 0])
