"""Prepared tri-modal data for labs: `mdm-lab data prepare --set NAME` into the user's cache, once, and the config
fields that point a run at it.

    data_dir, manifest = trimodal.prepared("tiny")       # ~2 min the first time, then a manifest check
    spec = ctx.spec("spec.yaml", set={**spec.data["set"], **trimodal.run_fields(data_dir, manifest)})

The directory is MDM_LAB_CACHE/data/NAME (default ~/.cache/mdm-lab/data/NAME). A file lock beside it keeps two labs
started together from building it at the same time (the second waits, then finds it current).
"""
import contextlib
import fcntl
import pathlib


def prepared(set_name: str = "tiny", workers: int = 2) -> tuple[pathlib.Path, dict]:
  """The cached prepared directory of data set SET_NAME (built if missing or stale) and its manifest."""
  from mdm_jax.data import prepare, sets   # pylint: disable=import-outside-toplevel
  from mdm_jax.data.text import cache_dir   # pylint: disable=import-outside-toplevel
  out = cache_dir() / "data" / set_name
  out.parent.mkdir(parents=True, exist_ok=True)
  with _locked(out.parent / f".{set_name}.lock"):
    manifest, rebuilt = prepare.prepare(out, sets.get(set_name), progress=False, workers=workers)
  if rebuilt:
    print(f"prepared the {set_name!r} data set in {out}")
  return out, manifest


def run_fields(data_dir, manifest: dict, mixture=None) -> dict:
  """Dotted config fields for a run on DATA_DIR: source, sequence length, vocabulary ranges (and the mixture)."""
  vocab = manifest["vocab"]
  fields = {"data.source": str(data_dir), "data.seq_len": int(manifest["seq_len"]),
            "data.text_vocab_size": int(vocab["text_size"]), "data.image_vocab_size": int(vocab["image_size"]),
            "data.audio_vocab_size": int(vocab["audio_size"])}
  if mixture is not None:
    fields["data.mixture"] = [float(w) for w in mixture]
  return fields


@contextlib.contextmanager
def _locked(path: pathlib.Path):
  with open(path, "w") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)
