"""Versioned tokenizer artefacts: one .npz of arrays plus a JSON header, checked by a content checksum.

The header (kind, version, config) is stored as a uint8 array named `__meta__`, so the file loads with
`allow_pickle=False`; nothing is ever unpickled. The checksum covers the header and every array's name, dtype, shape
and bytes, so a file edited or truncated after saving is refused with a UserError naming it.
"""
import hashlib
import json
import os
import pathlib

import numpy as np

from mdm_jax.errors import UserError

_META = "__meta__"


def content_checksum(meta: dict, arrays: dict[str, np.ndarray]) -> str:
  h = hashlib.sha256(json.dumps(meta, sort_keys=True).encode())
  for name in sorted(arrays):
    a = np.ascontiguousarray(arrays[name])
    h.update(f"{name}|{a.dtype.str}|{a.shape}".encode())
    h.update(a.tobytes())
  return h.hexdigest()


def save(path: str | os.PathLike, kind: str, version: int, meta: dict, arrays: dict[str, np.ndarray]) -> str:
  """Writes the artefact atomically; returns its checksum."""
  header = dict(meta, kind=kind, version=version)
  checksum = content_checksum(header, arrays)
  blob = np.frombuffer(json.dumps(dict(header, checksum=checksum), sort_keys=True).encode(), np.uint8)
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(path.name + ".tmp.npz")
  np.savez_compressed(tmp, **{_META: blob}, **arrays)
  os.replace(tmp, path)
  return checksum


def load(path: str | os.PathLike, kind: str, version: int) -> tuple[dict, dict[str, np.ndarray]]:
  """(header, arrays) of a saved artefact; UserError naming the file when missing, foreign, stale or corrupt."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise UserError(str(path), "tokenizer artefact not found", "run `mdm-lab data prepare`")
  try:
    with np.load(path, allow_pickle=False) as z:
      arrays = {name: z[name] for name in z.files}
    header = json.loads(arrays.pop(_META).tobytes())
  except Exception as e:  # any decode failure means the file is not what we wrote
    raise UserError(str(path), f"unreadable artefact ({type(e).__name__})", "delete it and re-run prepare") from e
  if header.get("kind") != kind:
    raise UserError(str(path), f"artefact kind {header.get('kind')!r}, expected {kind!r}", "pass the right file")
  if header.get("version") != version:
    raise UserError(str(path), f"{kind} version {header.get('version')}, expected {version}",
                    "re-run `mdm-lab data prepare` to rebuild it")
  stored = header.pop("checksum", None)
  if stored != content_checksum(header, arrays):
    raise UserError(str(path), "checksum mismatch (corrupt or edited)", "delete it and re-run prepare")
  return dict(header, checksum=stored), arrays
