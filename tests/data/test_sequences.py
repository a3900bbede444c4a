import numpy as np
import pytest

from mdm_jax.data import sequences
from mdm_jax.data.vocab import Vocab

V = Vocab(300, 64, 128)


def test_t2i_layout_masks_and_modalities():
  caption, codes = [5, 6, 7], np.arange(10)
  s = sequences.pair_sequence(V, "image", caption, codes, 20)
  expected = [V.id("<t2i>"), 5, 6, 7, V.id("<img>"), *(300 + codes), V.id("</img>")] + [V.pad_id] * 4
  np.testing.assert_array_equal(s["tokens"], expected)
  assert {k: v.dtype for k, v in s.items()} == {k: np.dtype(d) for k, d in sequences.FIELDS.items()}
  np.testing.assert_array_equal(s["loss_mask"], s["tokens"] != V.pad_id)
  np.testing.assert_array_equal(s["modality"], [0] * 4 + [1] * 16)  # pads carry the pair's media modality
  np.testing.assert_array_equal(s["segment"], [1] * 16 + [0] * 4)
  np.testing.assert_array_equal(s["prompt"], [True] * 5 + [False] * 15)  # task, caption and <img> condition
  content = sequences.pair_sequence(V, "image", caption, codes, 20)["tokens"][5:15]
  np.testing.assert_array_equal(V.content_modality(content), 1)


def test_s2t_layout_puts_text_last():
  s = sequences.pair_sequence(V, "audio", [9, 9], [0, 127], 8, text_first=False)
  np.testing.assert_array_equal(s["tokens"], [V.id("<s2t>"), V.id("<aud>"), 364, 491, V.id("</aud>"), 9, 9,
                                              V.pad_id])
  np.testing.assert_array_equal(s["modality"], [0, 2, 2, 2, 2, 0, 0, 2])
  np.testing.assert_array_equal(s["prompt"], [True] * 5 + [False] * 3)


def test_too_long_pairs_are_dropped_and_bad_ids_refused():
  assert sequences.pair_sequence(V, "image", [1] * 10, np.zeros(10), 22) is None  # needs 23
  assert sequences.pair_sequence(V, "image", [1] * 10, np.zeros(10), 23) is not None
  with pytest.raises(ValueError, match="image codes"):
    sequences.pair_sequence(V, "image", [1], [64], 30)
  with pytest.raises(ValueError, match="text ids"):
    sequences.pair_sequence(V, "audio", [300], [1], 30)
  with pytest.raises(ValueError, match="media"):
    sequences.pair_sequence(V, "video", [1], [1], 30)


def test_text_rows_number_documents_and_keep_eos_with_its_document():
  eos = V.id("[EOS]")
  rows = np.array([[1, 2, eos, 3, eos, 4], [5, eos, 6, 7, 8, 9]])
  t = sequences.text_rows(rows, V)
  np.testing.assert_array_equal(t["segment"], [[1, 1, 1, 2, 2, 3], [1, 1, 2, 2, 2, 2]])
  assert t["loss_mask"].all() and not t["prompt"].any() and (t["modality"] == 0).all()


def test_stack_row_source_and_nonpad_counts():
  pairs = [sequences.pair_sequence(V, "image", [1], [2], 12), sequences.pair_sequence(V, "audio", [1, 2], [3], 12)]
  text = sequences.text_rows(np.ones((1, 12), int), V)
  batch = sequences.stack(pairs + [{k: v[0] for k, v in text.items()}], 12)
  np.testing.assert_array_equal(sequences.row_source(batch["modality"]), [1, 2, 0])
  np.testing.assert_array_equal(sequences.nonpad_tokens(batch["loss_mask"]), [5, 6, 12])
  assert sequences.stack([], 12)["tokens"].shape == (0, 12)
