"""The data a run's samples are judged against: its training text (to fit the n-gram reference) and its held-out rows.

Rows are dicts of [N, L] arrays in the `data.sequences` format. A run on a prepared directory reads that directory's
shards; a run on the embedded corpus re-packs it exactly as its trainer did (`pipeline.load_packed_text`).
"""
import dataclasses

import numpy as np

from mdm_jax.data import manifest as manifest_lib
from mdm_jax.data import sequences
from mdm_jax.data.vocab import MODALITIES
from mdm_jax.errors import UserError


@dataclasses.dataclass
class HeldOut:
  train_text: np.ndarray               # [N, L] packed training text rows (fits the reference model)
  val: dict[str, dict[str, np.ndarray]]  # {modality: rows} of the validation split

  def rows(self, modality: str, limit: int | None = None) -> dict[str, np.ndarray]:
    if modality not in self.val or not len(self.val[modality]["tokens"]):
      raise UserError("--modality", f"the run's data has no held-out {modality} rows",
                      f"use one of {', '.join(self.val)}")
    return {k: v[:limit] for k, v in self.val[modality].items()}

  @classmethod
  def for_config(cls, cfg, modalities=MODALITIES, max_rows: int = 512) -> "HeldOut":
    if cfg.data.source == "shakespeare":
      from mdm_jax.data import pipeline   # pylint: disable=import-outside-toplevel
      packed = pipeline.load_packed_text(cfg)
      val = {"text": sequences.text_rows(packed.val_rows[:max_rows], cfg.vocab)} if "text" in modalities else {}
      return cls(packed.train_rows, val)
    from mdm_jax.data.shards import ShardSource   # pylint: disable=import-outside-toplevel
    manifest = manifest_lib.read(cfg.data.source)

    def read(modality, split, limit=None):
      entries = manifest_lib.split_entries(manifest, modality, split)
      source = ShardSource(cfg.data.source, entries["shards"], int(manifest["seq_len"]), deep_verify=False)
      rows = [source[i] for i in range(min(len(source), limit or len(source)))]
      return sequences.stack(rows, int(manifest["seq_len"]))

    val = {m: read(m, "val", max_rows) for m in modalities if m in manifest["splits"]}
    return cls(read("text", "train")["tokens"], val)
