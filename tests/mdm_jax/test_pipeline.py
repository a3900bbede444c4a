"""Real text in: tokenizer round trip, packing, held-out documents, determinism and iterator-state resume."""
import numpy as np

from mdm_jax.config import load_config
from mdm_jax.data import pipeline, text


def test_tokenizer_round_trip_is_exact_and_within_its_range():
  _, sonnets = text.embedded_documents()[0]
  tok = text.cached_text_tokenizer([sonnets], 300)
  sample = sonnets[:2000]
  ids = tok.encode(sample)
  assert tok.decode(ids) == sample
  assert max(ids) < 300 and len(ids) < 0.8 * len(sample)   # 44 merges already compress the bytes
  again = text.train_text_tokenizer([sonnets], 300, tok.path.with_name("again.json"))
  assert again.encode(sample) == ids                       # training is deterministic


def test_pack_joins_documents_with_eos_and_cuts_full_rows():
  rows = pipeline.pack([np.arange(5), np.arange(3)], seq_len=4, eos_id=99)
  np.testing.assert_array_equal(rows, [[0, 1, 2, 3], [4, 99, 0, 1]])


def test_validation_documents_are_held_out():
  cfg = load_config("tiny")
  packed = pipeline.load_packed_text(cfg)
  assert packed.val_titles == ("julius_caesar",) and "julius_caesar" not in packed.train_titles
  assert packed.train_rows.shape[1] == cfg.data.seq_len and packed.train_rows.max() < cfg.vocab_size


def test_order_is_seeded_and_iterator_state_resumes_exactly():
  cfg = load_config("tiny")
  a, b = pipeline.DataSource(cfg).iterator(), pipeline.DataSource(cfg).iterator()
  first = [next(a)["tokens"] for _ in range(3)]
  np.testing.assert_array_equal(first[0], next(b)["tokens"])
  state = a.get_state()
  expected = [next(a)["tokens"] for _ in range(2)]
  resumed = pipeline.DataSource(cfg).iterator()
  resumed.set_state(state)
  for e in expected:
    np.testing.assert_array_equal(next(resumed)["tokens"], e)
  other = pipeline.DataSource(cfg.replace(**{"train.seed": 1})).iterator()
  assert not np.array_equal(next(other)["tokens"], first[0])
