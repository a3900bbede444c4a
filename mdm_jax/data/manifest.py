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
  path = pathlib.Path(directory) / NAME
  if not path.is_file():
    raise UserError(str(path), "no data manifest", f"run `mdm-lab data prepare --out {directory}` first")
  try:
    manifest = json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise UserError(str(path), f"not valid JSON ({e.msg} at line {e.lineno})", "re-run prepare") from e
  if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
    raise UserError(str(path), f"not an {FORMAT} v{FORMAT_VERSION} manifest", "re-run `mdm-lab data prepare`")
  return manifest


def write(directory: str | os.PathLike, manifest: dict) -> pathlib.Path:
  path = pathlib.Path(directory) / NAME
  tmp = path.with_name(NAME + ".tmp")
  tmp.write_text(json.dumps(dict(manifest, format=FORMAT, format_version=FORMAT_VERSION), indent=1, sort_keys=True))
  os.replace(tmp, path)  # atomic: a reader never sees half a manifest
  return path


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
