import numpy as np
import pytest

from mdm_jax.data import artefacts
from mdm_jax.errors import UserError


def test_round_trip_and_checksum_is_content_addressed(tmp_path):
  arrays = {"codebook": np.arange(12, dtype=np.float32).reshape(3, 4)}
  c1 = artefacts.save(tmp_path / "a.npz", "demo", 2, {"k": 3}, arrays)
  header, loaded = artefacts.load(tmp_path / "a.npz", "demo", 2)
  assert header["k"] == 3 and header["checksum"] == c1
  np.testing.assert_array_equal(loaded["codebook"], arrays["codebook"])
  assert artefacts.save(tmp_path / "b.npz", "demo", 2, {"k": 3}, arrays) == c1
  assert artefacts.save(tmp_path / "c.npz", "demo", 2, {"k": 4}, arrays) != c1


@pytest.mark.parametrize("kind,version,match", [("other", 2, "kind"), ("demo", 3, "version")])
def test_wrong_kind_or_version_names_the_file(tmp_path, kind, version, match):
  artefacts.save(tmp_path / "a.npz", "demo", 2, {}, {"x": np.zeros(2)})
  with pytest.raises(UserError, match=match) as e:
    artefacts.load(tmp_path / "a.npz", kind, version)
  assert str(tmp_path / "a.npz") in str(e.value)


def test_edited_or_truncated_file_is_refused(tmp_path):
  path = tmp_path / "a.npz"
  artefacts.save(path, "demo", 1, {}, {"x": np.zeros(3)})
  header, arrays = artefacts.load(path, "demo", 1)
  arrays["x"][0] = 1.0  # same header, different content: the stored checksum no longer matches
  blob = np.frombuffer(__import__("json").dumps({**header}).encode(), np.uint8)
  np.savez(path, __meta__=blob, **arrays)
  with pytest.raises(UserError, match="checksum"):
    artefacts.load(path, "demo", 1)
  path.write_bytes(path.read_bytes()[:40])
  with pytest.raises(UserError, match="unreadable"):
    artefacts.load(path, "demo", 1)
  with pytest.raises(UserError, match="not found"):
    artefacts.load(tmp_path / "missing.npz", "demo", 1)
