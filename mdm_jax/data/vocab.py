"""The joint vocabulary: one id space for text, image codes, audio codes and special tokens.

Layout (one contiguous range per modality, specials last):

  | range                               | contents                                        |
  |-------------------------------------|-------------------------------------------------|
  | [0, text_size)                      | text subword ids (byte-level BPE)               |
  | [text_size, +image_size)            | image codebook ids                              |
  | [.., +audio_size)                   | audio codebook ids                              |
  | [special_start, +len(SPECIALS))     | SPECIALS, in the order listed below             |

The size is known from the config alone (tokenizers are trained to exactly their range), so FLOPs and parameter
counts can be planned before any data is built.
"""
import dataclasses

import numpy as np

SPECIALS = (
    "[MASK]", "[PAD]", "[BOS]", "[EOS]",          # diffusion mask, padding, document boundaries
    "<img>", "</img>", "<aud>", "</aud>",          # modality boundary tokens
    "<text>", "<t2i>", "<t2s>", "<i2t>", "<s2t>",  # task tokens: what the sequence asks to generate
)
MODALITIES = ("text", "image", "audio")  # modality ids 0, 1, 2 in the per-position `modality` array


@dataclasses.dataclass(frozen=True)
class Vocab:
  text_size: int
  image_size: int = 0
  audio_size: int = 0

  @property
  def image_start(self) -> int:
    return self.text_size

  @property
  def audio_start(self) -> int:
    return self.text_size + self.image_size

  @property
  def special_start(self) -> int:
    return self.text_size + self.image_size + self.audio_size

  @property
  def size(self) -> int:
    return self.special_start + len(SPECIALS)

  def id(self, special: str) -> int:
    return self.special_start + SPECIALS.index(special)

  @property
  def mask_id(self) -> int:
    return self.id("[MASK]")

  @property
  def pad_id(self) -> int:
    return self.id("[PAD]")

  def range(self, modality: str) -> tuple[int, int]:
    """[start, stop) of a modality's content ids."""
    start = {"text": 0, "image": self.image_start, "audio": self.audio_start}[modality]
    return start, start + {"text": self.text_size, "image": self.image_size, "audio": self.audio_size}[modality]

  def content_modality(self, ids: np.ndarray) -> np.ndarray:
    """Modality id of each content token; -1 for specials (their modality comes from the segment they sit in)."""
    ids = np.asarray(ids)
    out = np.full(ids.shape, -1, np.int8)
    for m, name in enumerate(MODALITIES):
      lo, hi = self.range(name)
      out[(ids >= lo) & (ids < hi)] = m
    return out

  def table(self) -> list[dict]:
    """The layout as rows (for docs, run.json and the data manifest)."""
    rows = [dict(name=m, start=self.range(m)[0], stop=self.range(m)[1]) for m in MODALITIES]
    rows += [dict(name=s, start=self.id(s), stop=self.id(s) + 1) for s in SPECIALS]
    return rows
