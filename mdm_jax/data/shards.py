"""Token shards on disk: ArrayRecord files (random access, one record per sequence) with sha256 checksums.

A record is the fixed-width concatenation of a sequence's arrays in `sequences.FIELDS` order (tokens int32,
modality int8, segment int32, loss_mask bool, prompt bool), little-endian, so decoding is a few `np.frombuffer`
slices and needs no pickle or proto. ArrayRecord silently reads a truncated file as having fewer records, so every
shard is checked against the size and sha256 in the manifest before it is opened.
"""
import hashlib
import pathlib

import numpy as np

from mdm_jax.data.sequences import FIELDS
from mdm_jax.errors import UserError

WRITER_OPTIONS = "group_size:1,uncompressed"  # group_size 1: reading one record never decodes its neighbours
_DTYPES = {name: np.dtype(dtype).newbyteorder("<") for name, dtype in FIELDS.items()}


def record_bytes(seq_len: int) -> int:
  return seq_len * sum(d.itemsize for d in _DTYPES.values())


def encode_record(arrays: dict[str, np.ndarray]) -> bytes:
  return b"".join(np.ascontiguousarray(arrays[name], _DTYPES[name]).tobytes() for name in _DTYPES)


def decode_record(blob: bytes, seq_len: int) -> dict[str, np.ndarray]:
  if len(blob) != record_bytes(seq_len):
    raise ValueError(f"record of {len(blob)} bytes, expected {record_bytes(seq_len)} for seq_len {seq_len}")
  out, offset = {}, 0
  for name, dtype in _DTYPES.items():
    out[name] = np.frombuffer(blob, dtype, seq_len, offset).astype(FIELDS[name])
    offset += seq_len * dtype.itemsize
  return out


def sha256_file(path: str | pathlib.Path) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def write_shards(arrays_NxL: dict[str, np.ndarray], directory: str | pathlib.Path, name: str,
                 records_per_shard: int = 4096) -> list[dict]:
  """Writes rows as `name-00000-of-00003.array_record`, ...; returns manifest entries (paths relative to directory)."""
  from array_record.python.array_record_module import ArrayRecordWriter  # pylint: disable=import-outside-toplevel
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  n = len(arrays_NxL["tokens"])
  count = max(1, -(-n // records_per_shard))
  entries = []
  for k in range(count):
    rel = f"{name}-{k:05d}-of-{count:05d}.array_record"
    tmp = directory / (rel + ".tmp")
    writer = ArrayRecordWriter(str(tmp), WRITER_OPTIONS)
    rows = range(k * records_per_shard, min(n, (k + 1) * records_per_shard))
    for i in rows:
      writer.write(encode_record({f: a[i] for f, a in arrays_NxL.items()}))
    writer.close()
    tmp.replace(directory / rel)
    entries.append({"file": rel, "records": len(rows), "bytes": (directory / rel).stat().st_size,
                    "sha256": sha256_file(directory / rel)})
  return entries


def verify_shards(directory: str | pathlib.Path, entries: list[dict], deep: bool = True) -> list[str]:
  """Absolute paths of the shards, after checking each exists with the recorded size (and sha256 if deep)."""
  directory = pathlib.Path(directory)
  paths = []
  for e in entries:
    path = directory / e["file"]
    if not path.is_file():
      raise UserError(str(path), "shard missing", "re-run `mdm-lab data prepare` for this directory")
    if path.stat().st_size != e["bytes"] or (deep and sha256_file(path) != e["sha256"]):
      raise UserError(str(path), "shard corrupt (size or sha256 differs from manifest.json)",
                      "re-run `mdm-lab data prepare` to rebuild it")
    paths.append(str(path))
  return paths


class ShardSource:
  """Random-access source of decoded sequences over verified shards (a grain RandomAccessDataSource)."""

  def __init__(self, directory: str | pathlib.Path, entries: list[dict], seq_len: int, deep_verify: bool = True):
    import grain  # pylint: disable=import-outside-toplevel
    self.seq_len = seq_len
    self.paths = verify_shards(directory, entries, deep=deep_verify)
    self._source = grain.sources.ArrayRecordDataSource(self.paths)
    expected = sum(e["records"] for e in entries)
    if len(self._source) != expected:
      raise UserError(self.paths[0], f"{len(self._source)} records, manifest says {expected}", "re-run prepare")

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    return decode_record(self._source[index], self.seq_len)

  def read_all(self) -> dict[str, np.ndarray]:
    rows = [self[i] for i in range(len(self))]
    return {name: np.stack([r[name] for r in rows]) for name in FIELDS}
