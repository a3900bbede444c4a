import numpy as np
import pytest

from mdm_jax.data import sequences, shards
from mdm_jax.data.vocab import Vocab
from mdm_jax.errors import UserError

V = Vocab(300, 64, 128)


def _rows(n=10, seq_len=16, seed=0):
  rng = np.random.default_rng(seed)
  seqs = [sequences.pair_sequence(V, "image", rng.integers(0, 300, rng.integers(1, 5)),
                                  rng.integers(0, 64, rng.integers(1, 8)), seq_len) for _ in range(n)]
  return sequences.stack(seqs, seq_len)


def test_write_read_round_trip_across_shards(tmp_path):
  rows = _rows(10)
  entries = shards.write_shards(rows, tmp_path, "image-train", records_per_shard=4)
  assert [e["records"] for e in entries] == [4, 4, 2]
  assert entries[0]["file"] == "image-train-00000-of-00003.array_record"
  assert all(e["sha256"] == shards.sha256_file(tmp_path / e["file"]) for e in entries)
  source = shards.ShardSource(tmp_path, entries, 16)
  assert len(source) == 10
  back = source.read_all()
  for name, dtype in sequences.FIELDS.items():
    assert back[name].dtype == np.dtype(dtype)
    np.testing.assert_array_equal(back[name], rows[name])
  assert len(shards.encode_record({k: v[0] for k, v in rows.items()})) == shards.record_bytes(16)


def test_missing_shard_names_the_file(tmp_path):
  entries = shards.write_shards(_rows(6), tmp_path, "audio-val", records_per_shard=3)
  (tmp_path / entries[1]["file"]).unlink()
  with pytest.raises(UserError, match="shard missing") as e:
    shards.ShardSource(tmp_path, entries, 16)
  assert str(e.value).startswith(str(tmp_path / entries[1]["file"]))
  assert "\n" not in str(e.value)


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_corrupt_shard_names_the_file(tmp_path, damage):
  entries = shards.write_shards(_rows(6), tmp_path, "text-train", records_per_shard=6)
  path = tmp_path / entries[0]["file"]
  data = bytearray(path.read_bytes())
  if damage == "flip":
    data[len(data) // 2] ^= 0xFF
  else:
    data = data[:-20]
  path.write_bytes(bytes(data))
  with pytest.raises(UserError, match="corrupt") as e:
    shards.ShardSource(tmp_path, entries, 16)
  assert str(path) in str(e.value)


def test_decode_refuses_a_record_of_the_wrong_length():
  blob = shards.encode_record({k: v[0] for k, v in _rows(1).items()})
  with pytest.raises(ValueError, match="expected"):
    shards.decode_record(blob, 17)
