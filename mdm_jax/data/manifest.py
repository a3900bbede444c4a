"""DIR/manifest.json of a prepared data directory: what `prepare` built and what the loaders check against.

Top-level keys: format, format_version, set, seed, config (the resolved prepare config) and config_hash, seq_len,
vocab (sizes + layout table), layout (conventions), record (field dtypes), tokenizers (file, version, checksum, rates),
splits[modality][train|val] (sequences, nonpad_tokens, mean_nonpad_tokens, shards[]), sources (counts, licences),
reconstruction (held-out tokenizer errors), sizes, timings, versions.
"""
import json
import os
import pathlib

from mdm_jax.data.vocab import MODALITIES, Vocab
from mdm_jax.errors import UserError

NAME = "manifest.json"
FORMAT, FORMAT_VERSION = "mdm-lab-data", 1


def read(directory: str | os.PathLike) -> dict:
  """The validated manifest of a prepared directory; UserError naming the file and field when it is not usable."""
  path = pathlib.Path(directory) / NAME
  if not path.is_file():
    raise UserError(str(path), "no data manifest", f"run `mdm-lab data prepare --out {directory}` first")
  try:
    manifest = json.loads(path.read_text())
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    where = f": line {e.lineno} column {e.colno}" if isinstance(e, json.JSONDecodeError) else ""
    problem = e.msg if isinstance(e, json.JSONDecodeError) else e.reason   # getattr(e, "msg", e.reason) would raise
    raise UserError(str(path), f"not valid JSON ({problem}{where})", "re-run prepare") from None
  if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or manifest.get(
      "format_version") != FORMAT_VERSION:
    raise UserError(str(path), f"not an {FORMAT} v{FORMAT_VERSION} manifest", "re-run `mdm-lab data prepare`")
  validate(manifest, path)
  return manifest


def write(directory: str | os.PathLike, manifest: dict) -> pathlib.Path:
  from mdm_jax import runio  # pylint: disable=import-outside-toplevel
  # atomic: a reader never sees half a manifest
  return runio.write_json_atomic(pathlib.Path(directory) / NAME,
                                 dict(manifest, format=FORMAT, format_version=FORMAT_VERSION))


def validate(manifest: dict, path: pathlib.Path) -> None:
  """Everything the loaders read, checked once: types, ranges, shard entries (relative paths inside the directory,
  sizes, sha256). The error names the field, e.g. `.../manifest.json: splits.text.train.shards[0].sha256`."""
  def fail(field, problem):
    raise UserError(f"{path}: {field}", problem, "re-run `mdm-lab data prepare` (do not edit the manifest)")

  def integer(value, field, low):
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
      fail(field, f"must be an integer >= {low}, got {value!r}")

  for key in ("set", "config_hash"):
    if not isinstance(manifest.get(key), str):
      fail(key, f"must be a string, got {manifest.get(key)!r}")
  for key in ("layout", "tokenizers", "vocab", "splits"):
    if not isinstance(manifest.get(key), dict):
      fail(key, f"must be a mapping, got {type(manifest.get(key)).__name__}")
  integer(manifest.get("seq_len"), "seq_len", 1)
  for key, low in (("text_size", 1), ("image_size", 0), ("audio_size", 0)):
    integer(manifest["vocab"].get(key), f"vocab.{key}", low)
  if not manifest["splits"]:
    fail("splits", "is empty")
  for modality, splits in manifest["splits"].items():
    if modality not in MODALITIES:
      fail(f"splits.{modality}", f"unknown modality (use {', '.join(MODALITIES)})")
    for split in ("train", "val"):
      where = f"splits.{modality}.{split}"
      entry = splits.get(split) if isinstance(splits, dict) else None
      if not isinstance(entry, dict):
        fail(where, "missing")
      integer(entry.get("sequences"), f"{where}.sequences", 0)
      mean = entry.get("mean_nonpad_tokens")
      low_ok = (lambda m: m > 0) if entry["sequences"] else (lambda m: m >= 0)   # an empty split has mean 0
      if not isinstance(mean, (int, float)) or isinstance(mean, bool) or not (low_ok(mean) and
                                                                              mean <= manifest["seq_len"]):
        fail(f"{where}.mean_nonpad_tokens", f"must be a number in (0, seq_len], got {mean!r}")
      shard_list = entry.get("shards")
      if not isinstance(shard_list, list) or not shard_list:
        fail(f"{where}.shards", "must be a non-empty list of shard entries")
      for i, shard in enumerate(shard_list):
        _validate_shard(shard, f"{where}.shards[{i}]", fail, integer)
      if sum(sh["records"] for sh in shard_list) != entry["sequences"]:
        fail(f"{where}.sequences", f"{entry['sequences']} but its shards hold "
             f"{sum(sh['records'] for sh in shard_list)} records")


def _validate_shard(shard, where: str, fail, integer) -> None:
  if not isinstance(shard, dict):
    fail(where, f"must be a mapping, got {shard!r}")
  file = shard.get("file")
  if not isinstance(file, str) or not file or pathlib.PurePosixPath(file).is_absolute() or ".." in \
      pathlib.PurePosixPath(file).parts:
    fail(f"{where}.file", f"must be a relative path inside the data directory, got {file!r}")
  integer(shard.get("records"), f"{where}.records", 0)
  integer(shard.get("bytes"), f"{where}.bytes", 0)
  digest = shard.get("sha256")
  if not isinstance(digest, str) or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
    fail(f"{where}.sha256", f"must be 64 lowercase hex digits, got {digest!r}")


def vocab(manifest: dict) -> Vocab:
  v = manifest["vocab"]
  return Vocab(v["text_size"], v["image_size"], v["audio_size"])


def split_entries(manifest: dict, modality: str, split: str) -> dict:
  if modality not in MODALITIES:
    raise UserError("modality", f"unknown modality {modality!r}", f"use one of {', '.join(MODALITIES)}")
  try:
    return manifest["splits"][modality][split]
  except KeyError as e:
    raise UserError(f"manifest.json: splits.{modality}.{split}", "missing from this data directory",
                    "prepare a set that has this modality") from e
