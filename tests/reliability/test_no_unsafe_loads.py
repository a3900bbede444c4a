"""No code path can execute a user file: no pickle/marshal/shelve/joblib loads, eval/exec, non-safe YAML loaders,
np.load(allow_pickle=True) or torch.load without weights_only=True, anywhere in the repository's Python sources.

The scan parses every source file (comments and strings cannot trigger it, `model.eval()` is not `eval`) and
resolves import aliases (`import numpy as np`, `from yaml import load`), so renaming does not hide a call either.
"""
import ast
import os
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]
SKIP_DIRS = {"node_modules", "build", "dist", "__pycache__"}   # and every hidden directory (.git, .venv*)

# Calls that deserialise executable content, by fully qualified name.
ALWAYS_UNSAFE = {
    "eval", "exec", "builtins.eval", "builtins.exec",
    "pickle.load", "pickle.loads", "pickle.Unpickler", "_pickle.load", "_pickle.loads", "cPickle.load",
    "cPickle.loads", "marshal.load", "marshal.loads", "shelve.open", "dill.load", "dill.loads",
    "cloudpickle.load", "cloudpickle.loads", "joblib.load", "pandas.read_pickle", "numpy.lib.format.read_array",
    "yaml.unsafe_load", "yaml.unsafe_load_all", "yaml.full_load", "yaml.full_load_all",
}
SAFE_YAML_LOADERS = {"SafeLoader", "CSafeLoader", "BaseLoader", "CBaseLoader"}


def source_files() -> list[pathlib.Path]:
  """Every .py file of the repository (not virtual environments, caches or build output, which are pruned)."""
  out = []
  for top, dirs, files in os.walk(ROOT):
    dirs[:] = [d for d in dirs if not (d in SKIP_DIRS or d.startswith(".") or d.endswith(".egg-info"))]
    out += [pathlib.Path(top) / f for f in files if f.endswith(".py")]
  return sorted(out)


def _aliases(tree: ast.AST) -> dict[str, str]:
  """Local name -> qualified name, from the module's imports."""
  out = {}
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for a in node.names:
        out[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      for a in node.names:
        out[a.asname or a.name] = f"{node.module}.{a.name}"
  return out


def _qualified(func: ast.expr, aliases: dict[str, str]) -> str | None:
  parts = []
  while isinstance(func, ast.Attribute):
    parts.append(func.attr)
    func = func.value
  if not isinstance(func, ast.Name):
    return None
  return ".".join([aliases.get(func.id, func.id), *reversed(parts)])


def _keyword(call: ast.Call, name: str):
  return next((k.value for k in call.keywords if k.arg == name), None)


def _is_const(node, value) -> bool:
  return isinstance(node, ast.Constant) and node.value is value


def unsafe_calls(text: str, filename: str = "<string>") -> list[str]:
  """'file:line: call' for every call that could execute the content it loads."""
  tree = ast.parse(text, filename)
  aliases = _aliases(tree)
  found = []
  for node in ast.walk(tree):
    if not isinstance(node, ast.Call):
      continue
    name = _qualified(node.func, aliases)
    if name is None:
      continue
    bad = name in ALWAYS_UNSAFE
    if name in ("yaml.load", "yaml.load_all"):   # safe only with an explicitly safe Loader
      loader = _keyword(node, "Loader") or (node.args[1] if len(node.args) > 1 else None)
      loader_name = _qualified(loader, aliases) if loader is not None else None
      bad = loader_name is None or loader_name.split(".")[-1] not in SAFE_YAML_LOADERS
    elif name == "numpy.load":
      flag = _keyword(node, "allow_pickle")
      bad = flag is not None and not _is_const(flag, False)
    elif name == "torch.load":
      bad = not _is_const(_keyword(node, "weights_only"), True)
    if bad:
      found.append((node.lineno, f"{filename}:{node.lineno}: {name}"))
  return [text for _, text in sorted(found)]


UNSAFE_SNIPPET = """
import pickle, marshal, yaml, torch, joblib
import numpy as np
import pandas as pd
from pickle import loads as undo
from yaml import load
eval("1 + 1")
exec("x = 1")
pickle.load(open("f", "rb"))
undo(b"")
marshal.loads(b"")
yaml.load(text)
load(text, Loader=yaml.Loader)
yaml.unsafe_load(text)
yaml.full_load(text)
np.load("a.npy", allow_pickle=True)
torch.load("model.pt")
torch.load("model.pt", weights_only=False)
pd.read_pickle("t.pkl")
joblib.load("m.joblib")
"""

SAFE_SNIPPET = """
import ast, json, yaml, torch
import numpy as np
model.eval()
ast.literal_eval("[1, 2]")
json.load(open("f"))
yaml.safe_load(text)
yaml.load(text, Loader=yaml.SafeLoader)
np.load("a.npz", allow_pickle=False)
np.load("a.npy")
torch.load("model.pt", weights_only=True)
s = "pickle.load(f) and eval(x) in a string"   # eval(...) in a comment
"""


def test_the_scanner_finds_every_unsafe_form_and_nothing_safe():
  found = unsafe_calls(UNSAFE_SNIPPET)
  assert [f.split(": ")[1] for f in found] == [
      "eval", "exec", "pickle.load", "pickle.loads", "marshal.loads", "yaml.load", "yaml.load", "yaml.unsafe_load",
      "yaml.full_load", "numpy.load", "torch.load", "torch.load", "pandas.read_pickle", "joblib.load"]
  assert unsafe_calls(SAFE_SNIPPET) == []


def test_no_source_file_loads_user_data_unsafely():
  files = source_files()
  assert len(files) > 100 and ROOT / "mdm_jax" / "train.py" in files and pathlib.Path(__file__) in files
  found = [hit for path in files for hit in unsafe_calls(path.read_text(), str(path.relative_to(ROOT)))]
  assert found == [], "unsafe loads (use json/yaml.safe_load/np.load(allow_pickle=False)):\n" + "\n".join(found)

