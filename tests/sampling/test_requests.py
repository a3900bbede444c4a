"""Generation requests follow the training layout; bad prompts give one-line errors."""
import numpy as np
import pytest

from mdm_jax.data import sequences
from mdm_jax.data.vocab import Vocab
from mdm_jax.errors import UserError
from mdm_jax.sampling import requests

VOCAB = Vocab(300, 16, 32)


def test_image_request_is_the_training_pair_with_its_codes_masked():
  caption = [5, 6, 7]
  row = requests.media_row(VOCAB, 64, "image", caption, 16)
  pair = sequences.pair_sequence(VOCAB, "image", caption, np.arange(16), 64)
  slots = row == VOCAB.mask_id
  lo, hi = VOCAB.range("image")
  np.testing.assert_array_equal(slots, (pair["tokens"] >= lo) & (pair["tokens"] < hi))
  np.testing.assert_array_equal(row[~slots], pair["tokens"][~slots])   # task, caption, boundaries, padding
  assert not (slots & pair["prompt"]).any()
  assert row[np.flatnonzero(slots)[-1] + 1] == VOCAB.id("</img>")


def test_text_infill_fills_the_row_between_prefix_and_suffix():
  row = requests.text_row(VOCAB, 12, [1, 2, 3], [8, 9])
  np.testing.assert_array_equal(row, [1, 2, 3] + [VOCAB.mask_id] * 7 + [8, 9])


@pytest.mark.parametrize("build", [
    lambda: requests.text_row(VOCAB, 8, list(range(8))),
    lambda: requests.media_row(VOCAB, 40, "audio", list(range(20)), 30),
    lambda: requests.media_row(VOCAB, 40, "audio", [1], 0),
    lambda: requests.check_modality("video"),
])
def test_impossible_requests_raise_one_line_user_errors(build):
  with pytest.raises(UserError) as info:
    build()
  assert "\n" not in str(info.value)


def test_allowed_table_gives_each_class_its_own_range():
  table = requests.allowed_table(VOCAB)
  for c, name in enumerate(("text", "image", "audio")):
    lo, hi = VOCAB.range(name)
    assert table[c, lo:hi].all() and table[c].sum() == (hi - lo) + (c == 0)
  assert table[0, VOCAB.id("[EOS]")] and not table[:, VOCAB.mask_id].any()


def test_audio_length_recovers_a_linear_rate_in_whole_frames():
  text = np.arange(5, 30)
  model = requests.AudioLength.fit(text, 3 * text + 10, stages=2)
  assert model.slope == pytest.approx(3) and model.intercept == pytest.approx(10)
  assert model(12, max_codes=200) == 46 and model(12, max_codes=41) == 40   # even (2 stages), clamped to fit
