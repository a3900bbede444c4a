"""Bad input at every boundary, through the real CLI: one line naming the field and the fix, exit code 2, and
nothing on disk lost or touched.

Each case is an `mdm-lab` command line against one shared workspace: a finished one-run sweep (its run.json,
metrics and checkpoints must survive every bad invocation), a small real prepared data directory, a good fit table,
and the bad files the cases point at. The workspace is snapshotted (paths, bytes, mtimes) around every case.
Most cases run `labs.cli.main(argv)` in-process for speed; a few go through a subprocess and the console script.
"""
import dataclasses
import json
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml

from labs.cli import main
from mdm_jax import runio
from mdm_jax.data import manifest as manifest_lib, sequences, shards
from mdm_jax.data.vocab import Vocab
from tests.reliability.conftest import TINY, cli_set, subprocess_env, write_spec

SWEEP_SHAPE = dict(TINY, **{"train.steps": 4})
TEXT_VOCAB = 499   # the tiny config's data.text_vocab_size


@dataclasses.dataclass(frozen=True)
class Case:
  name: str
  argv: tuple[str, ...]        # "{ws}" stands for the workspace, "{run}" for the finished run's directory
  field: str                   # the message starts with it (after "mdm-lab: error: "), or names it
  fix: str                     # what the message tells the user to do (or what a valid value is)
  moves_aside: bool = False    # the command moves unreadable files aside (kept, not lost)


def _train(*extra: str) -> tuple[str, ...]:
  return ("train", "tiny", "--out", "{ws}/new-run", "--no-progress", *cli_set(), *extra)


def _data(name: str, *extra: str) -> tuple[str, ...]:
  return _train("--set", f"data.source={{ws}}/{name}", *extra)


def _spec(name: str) -> tuple[str, ...]:
  return ("sweep", "plan", f"{{ws}}/{name}", "--no-probe")


def _fit(table: str, *extra: str) -> tuple[str, ...]:
  return ("fit", f"{{ws}}/{table}", "--method", "approach3", "--out", "{ws}/fit-out", "--formats", "", *extra)


CASES = [
    # --- config ----------------------------------------------------------------------------------------------------
    Case("unknown field", _train("--set", "model.d_modle=64"), "model.d_modle", "valid fields here: d_ff"),
    Case("unknown section", _train("--set", "trian.steps=5"), "trian", "valid fields here: batch"),
    Case("not a number", _train("--set", "optim.lr=fast"), "optim.lr", "expected a number"),
    Case("negative lr", _train("--set", "optim.lr=-1"), "optim.lr", "must be > 0"),
    Case("fractional steps", _train("--set", "train.steps=1.5"), "train.steps", "expected an integer"),
    Case("heads do not divide width", _train("--set", "model.n_heads=3"), "model.n_heads",
         "pick n_heads with d_model % n_heads == 0"),
    Case("unknown schedule", _train("--set", "diffusion.schedule=cubic"), "diffusion.schedule",
         "use one of linear, loglinear"),
    Case("beta out of range", _train("--set", "optim.b2=1"), "optim.b2", "must be in [0, 1)"),
    Case("mixture of two weights", _train("--set", "data.mixture=[0.5,0.5]"), "data.mixture",
         "needs 3 weights (text, image, audio)"),
    Case("override without =", _train("--set", "optim.lr"), "optim.lr", "e.g. --set optim.lr=1e-3"),
    Case("config file missing", ("train", "{ws}/nosuch.yaml", "--out", "{ws}/new-run"), "{ws}/nosuch.yaml",
         "give a YAML/JSON path or one of: tiny"),
    Case("config file not YAML", ("train", "{ws}/broken.yaml", "--out", "{ws}/new-run"), "{ws}/broken.yaml",
         "at line 3, column 6 (fix the YAML there)"),
    Case("config file not text", ("train", "{ws}/binary.csv", "--out", "{ws}/new-run"), "{ws}/binary.csv",
         "invalid start byte at byte 128 (fix the YAML there)"),
    Case("override value not YAML", _train("--set", "data.mixture=[0.5,0.5"), "data.mixture",
         "fix its YAML syntax"),
    Case("config file not a mapping", ("train", "{ws}/list.yaml", "--out", "{ws}/new-run"), "{ws}/list.yaml",
         "e.g. model: {d_model: 128}"),
    Case("max_grad_norm infinite", _train("--set", "train.max_grad_norm=inf"), "train.max_grad_norm",
         "must be a finite number"),
    Case("micro-batch does not divide", _train("--set", "batch.physical=3"), "batch.physical",
         "gradient accumulation needs whole micro-steps"),
    Case("completep without base width", _train("--set", "param.parametrization=completep"), "param.base_width",
         "e.g. --set param.base_width=128"),
    Case("sequence longer than the text", _train("--set", "data.seq_len=100000"), "data.seq_len",
         "use a shorter seq_len"),
    # --- run and checkpoint directories --------------------------------------------------------------------------
    Case("out is a file", ("train", "tiny", "--out", "{ws}/a-file", *cli_set()), "{ws}/a-file",
         "give a new or an existing run directory as --out"),
    Case("out holds another run", ("train", "tiny", "--out", "{run}", *cli_set(**SWEEP_SHAPE), "--set", "optim.lr=0.5"),
         "{run}", "use a new --out directory, or the original config to resume"),
    Case("run.json unreadable", ("train", "tiny", "--out", "{ws}/torn-run", *cli_set()), "{ws}/torn-run/run.json",
         "restore it or remove the run directory"),
    Case("checkpoints is a file", ("train", "tiny", "--out", "{ws}/ckpt-file", *cli_set()),
         "{ws}/ckpt-file/checkpoints", "move the file away"),
    Case("checkpoints holds junk", ("train", "tiny", "--out", "{ws}/ckpt-junk", *cli_set()),
         "{ws}/ckpt-junk/checkpoints", "keep only checkpoints written by mdm-lab"),
    Case("every checkpoint corrupt", ("train", "tiny", "--out", "{ws}/ckpt-corrupt", *cli_set(**SWEEP_SHAPE)),
         "{ws}/ckpt-corrupt/checkpoints", "restart the run from scratch", moves_aside=True),
    Case("run.json without a config", ("elbo", "{ws}/no-config"), "{ws}/no-config/run.json",
         "pass the --out directory of `mdm-lab train`"),
    Case("sample a run without checkpoints", ("sample", "{ws}/no-ckpt", "--modality", "text", "--out",
                                              "{ws}/samples"), "{ws}/no-ckpt/checkpoints", "train the run first"),
    # --- sweep spec and sweep directory ----------------------------------------------------------------------------
    Case("spec missing", _spec("nosuch-spec.yaml"), "{ws}/nosuch-spec.yaml", "give the path of a YAML sweep spec"),
    Case("spec not YAML", _spec("spec-broken.yaml"), "{ws}/spec-broken.yaml",
         "at line 4, column 5 (fix the YAML there)"),
    Case("spec unknown field", _spec("spec-field.yaml"), "spec.grdi", "valid fields: name, base"),
    Case("spec unknown axis", _spec("spec-axis.yaml"), "grid.learning_rate", "use a dotted config field"),
    Case("spec zip lengths", _spec("spec-zip.yaml"), "grid.zip", "give equally long lists"),
    Case("spec empty axis", _spec("spec-empty.yaml"), "grid.seed", "give at least one value"),
    Case("spec bad generator", _spec("spec-gen.yaml"), "grid.lr.log", "0 < lo <= hi"),
    Case("spec negative retries", _spec("spec-retries.yaml"), "spec.retries", "integer >= 0"),
    Case("spec bad config value", _spec("spec-set.yaml"), "spec.set: optim.lr", "must be > 0"),
    Case("spec mixture sum", _spec("spec-mixture.yaml"), "grid.mixture[0]", "sum to 1"),
    Case("spec base not YAML", _spec("spec-base-broken.yaml"), "spec.base", "fix the syntax of {ws}/broken.yaml"),
    Case("spec isoflop guess not a fit", _spec("spec-nstar.yaml"), "isoflop.n_star.fit",
         "holds a JSON list, not a fit (give the fit.json written by `mdm-lab fit`)"),
    Case("spec base missing", _spec("spec-base.yaml"), "spec.base", "a path relative to the spec, or one of"),
    Case("bad spec on an existing sweep", ("sweep", "run", "{ws}/spec-axis.yaml", "--out", "{ws}/sweep",
                                           "--no-progress"), "grid.learning_rate", "use a dotted config field"),
    Case("sweep out is a file", ("sweep", "run", "{ws}/spec.yaml", "--out", "{ws}/a-file", "--no-progress"),
         "{ws}/a-file", "give a sweep directory"),
    Case("sweep index corrupt", ("sweep", "run", "{ws}/spec.yaml", "--out", "{ws}/bad-index", "--no-progress"),
         "{ws}/bad-index/index.sqlite", "start the sweep in a new --out directory"),
    Case("zero workers", ("sweep", "run", "{ws}/spec.yaml", "--out", "{ws}/sweep", "--runner", "processes",
                          "--workers", "0"), "--workers", "must be > 0"),
    Case("data directory is a file", ("data", "prepare", "--out", "{ws}/a-file", "--no-progress"), "{ws}/a-file",
         "give a new or an existing data directory as --out"),
    Case("status of a non-sweep", ("sweep", "status", "{ws}/data"), "{ws}/data",
         "give the --out of `mdm-lab sweep run`"),
    # --- data: manifest, mixture, shards ---------------------------------------------------------------------------
    Case("data without manifest", _data("no-manifest"), "{ws}/no-manifest/manifest.json",
         "run `mdm-lab data prepare --out"),
    Case("manifest not JSON", _data("manifest-torn"), "{ws}/manifest-torn/manifest.json",
         "not valid JSON (Expecting value: line 2 column 13) (re-run prepare)"),
    Case("manifest of another format", _data("manifest-format"), "{ws}/manifest-format/manifest.json",
         "re-run `mdm-lab data prepare`"),
    Case("manifest field wrong type", _data("manifest-seq-len"), "{ws}/manifest-seq-len/manifest.json: seq_len",
         "re-run `mdm-lab data prepare`"),
    Case("shard path escapes the directory", _data("shard-escape"),
         "{ws}/shard-escape/manifest.json: splits.text.train.shards[0].file", "re-run `mdm-lab data prepare`"),
    Case("shard missing", _data("shard-missing"), "{ws}/shard-missing/text-val-00000-of-00001.array_record",
         "re-run `mdm-lab data prepare`"),
    Case("shard corrupt", _data("shard-corrupt"), "{ws}/shard-corrupt/text-train-00000-of-00001.array_record",
         "re-run `mdm-lab data prepare` to rebuild it"),
    Case("config disagrees with manifest", _data("data", "--set", "data.text_vocab_size=512"),
         "data.text_vocab_size", f"set data.text_vocab_size={TEXT_VOCAB}"),
    Case("mixture asks for a missing modality", _data("data", "--set", "data.mixture=[0.5,0.5,0]"),
         "data.mixture.image", "has no image data (set its weight to 0"),
    Case("mixture weight negative", _data("data", "--set", "data.mixture=[1.5,-0.5,0]"), "data.mixture",
         "weights must be >= 0"),
    # --- fit table -------------------------------------------------------------------------------------------------
    Case("table missing", _fit("nosuch.csv"), "{ws}/nosuch.csv", "give a CSV or Parquet table"),
    Case("table format", _fit("table.xlsx"), "{ws}/table.xlsx", "use .csv, .tsv or .parquet"),
    Case("table without loss", _fit("no-loss.csv"), "loss", "the table needs a loss column"),
    Case("table with one size column", _fit("one-size.csv"), "tokens", "give at least two of params, tokens, flops"),
    Case("table text value", _fit("text-value.csv"), "params", "drop or fix those rows"),
    Case("table negative value", _fit("negative.csv"), "flops", "must be > 0"),
    Case("table NaN loss", _fit("nan-loss.csv"), "loss", "drop or fix those rows"),
    Case("table empty", _fit("empty.csv"), "loss", "give at least one run"),
    Case("table too short", _fit("short.csv"), "loss", "add runs"),
    Case("table not a table", _fit("binary.csv"), "{ws}/binary.csv", "check the file format"),
    Case("column mapping", _fit("table.csv", "--column", "params=Model Size"), "Model Size",
         "columns are: params"),
    Case("table without a size trade-off", ("fit", "{ws}/table.csv", "--method", "vpnls", "--out", "{ws}/fit-out",
                                            "--formats", ""), "vpnls", "degenerate fit, no compute-optimal frontier"),
    Case("fit a directory without runs", ("fit", "{ws}/data", "--method", "approach3", "--out", "{ws}/fit-out"),
         "{ws}/data", "give a run dir or a sweep dir"),
    Case("approach1 without curves", ("fit", "{ws}/sweep", "--method", "approach1", "--out", "{ws}/fit-out"),
         "step", ">= 2 rows per run"),
]

SUBPROCESS_CASES = ("negative lr", "shard corrupt")


# --- the workspace ---------------------------------------------------------------------------------------------------

def _write(path: pathlib.Path, text) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  if isinstance(text, bytes):
    path.write_bytes(text)
  else:
    path.write_text(text)


def _data_dir(out: pathlib.Path, seq_len: int) -> dict:
  """A real prepared text-only directory: ArrayRecord shards of packed rows and a manifest, as `prepare` writes."""
  vocab = Vocab(TEXT_VOCAB, 0, 0)
  rng = np.random.default_rng(0)
  splits = {}
  for split, n in (("train", 64), ("val", 16)):
    rows = sequences.text_rows(rng.integers(0, TEXT_VOCAB, (n, seq_len)), vocab)
    entries = shards.write_shards(rows, out, f"text-{split}", records_per_shard=n)
    splits[split] = {"sequences": n, "nonpad_tokens": int(rows["loss_mask"].sum()),
                     "mean_nonpad_tokens": float(rows["loss_mask"].sum() / n), "shards": entries}
  manifest = {"set": "reliability", "config_hash": "0" * 16, "seq_len": seq_len, "layout": sequences.LAYOUT_NOTES,
              "tokenizers": {}, "vocab": {"text_size": TEXT_VOCAB, "image_size": 0, "audio_size": 0},
              "splits": {"text": splits}}
  manifest_lib.write(out, manifest)
  return manifest_lib.read(out)


def _variant(ws: pathlib.Path, name: str, edit) -> None:
  """A copy of the good data directory with `edit(copy_dir, manifest)` applied (manifest rewritten if returned)."""
  copy = ws / name
  shutil.copytree(ws / "data", copy)
  manifest = json.loads((copy / manifest_lib.NAME).read_text())
  new = edit(copy, manifest)
  if new is not None:
    (copy / manifest_lib.NAME).write_text(json.dumps(new))


def _table(ws: pathlib.Path, name: str, rows: list[dict] | None, header=("params", "tokens", "loss")) -> None:
  import csv
  with open(ws / name, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else list(header))
    writer.writeheader()
    writer.writerows(rows or [])


def _specs(ws: pathlib.Path) -> None:
  good = {"name": "bad-inputs", "base": "tiny", "set": dict(TINY), "grid": {"seed": [0, 1]}}
  variants = {
      "spec-field.yaml": {"grdi": {"seed": [0]}},
      "spec-axis.yaml": {"grid": {"learning_rate": [1e-3]}},
      "spec-zip.yaml": {"grid": {"zip": {"lr": [1e-3, 2e-3], "seed": [0]}}},
      "spec-empty.yaml": {"grid": {"seed": []}},
      "spec-gen.yaml": {"grid": {"lr": {"log": [0, 1e-2, 3]}}},
      "spec-retries.yaml": {"retries": -1},
      "spec-set.yaml": {"set": {**TINY, "optim.lr": -1}},
      "spec-mixture.yaml": {"grid": {"mixture": [[0.5, 0.2, 0.2]]}},
      "spec-base.yaml": {"base": "no-such-base"},
      "spec-base-broken.yaml": {"base": "broken.yaml"},
      "spec-nstar.yaml": {"isoflop": {"budgets": [1e12], "sizes": 3, "spread": 2, "n_star": {"fit": "list.json"}}},
  }
  for name, change in variants.items():
    _write(ws / name, yaml.safe_dump({**good, **change}, sort_keys=False))
  _write(ws / "spec-broken.yaml", "name: broken\ngrid:\n  seed: [0, 1\nbase: tiny\n")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
  ws = tmp_path_factory.mktemp("bad-inputs")
  # a finished sweep of one run: its files must survive every bad invocation
  spec = write_spec(ws, {"seed": [0]}, set=SWEEP_SHAPE)
  assert main(["sweep", "run", str(spec), "--out", str(ws / "sweep"), "--runner", "inprocess", "--no-progress"]) == 0
  (run,) = (ws / "sweep" / "runs").iterdir()
  assert runio.read_json(run / runio.RUN_JSON)["status"] == "done"

  _data_dir(ws / "data", TINY["data.seq_len"])
  _write(ws / "broken.yaml", "model:\n  d_model: [32\ntrain: {steps: 2}\n")
  _write(ws / "list.yaml", "- model\n- train\n")
  _write(ws / "list.json", "[1, 2]\n")
  _write(ws / "no-config" / "run.json", '{"run_id": "abc", "status": "done"}\n')
  _write(ws / "a-file", "not a directory\n")
  _write(ws / "torn-run" / "run.json", '{"run_id": "abc", "status": "runn')
  _write(ws / "ckpt-file" / "checkpoints", "not a directory\n")
  (ws / "ckpt-junk" / "checkpoints" / "backup").mkdir(parents=True)
  shutil.copytree(run, ws / "ckpt-corrupt")
  for path in (ws / "ckpt-corrupt" / "checkpoints").rglob("*"):
    if path.is_file():
      path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
  _write(ws / "no-ckpt" / "run.json", (run / "run.json").read_text())
  _specs(ws)
  (ws / "bad-index").mkdir()
  _write(ws / "bad-index" / "index.sqlite", b"SQLite format 3\x00" + b"\x13" * 4000)

  _write(ws / "no-manifest" / "README", "no manifest here\n")
  torn = '{"format": "mdm-lab-data",\n "seq_len": '
  _variant(ws, "manifest-torn", lambda d, m: _write(d / manifest_lib.NAME, torn))
  _variant(ws, "manifest-format", lambda d, m: {**m, "format": "something-else"})
  _variant(ws, "manifest-seq-len", lambda d, m: {**m, "seq_len": "32"})

  def escape(d, m):
    m["splits"]["text"]["train"]["shards"][0]["file"] = "../data/" + m["splits"]["text"]["train"]["shards"][0]["file"]
    return m
  _variant(ws, "shard-escape", escape)
  _variant(ws, "shard-missing", lambda d, m: (d / m["splits"]["text"]["val"]["shards"][0]["file"]).unlink())

  def flip(d, m):
    path = d / m["splits"]["text"]["train"]["shards"][0]["file"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
  _variant(ws, "shard-corrupt", flip)

  # a valid table, but with no N-D trade-off in it: a parametric fit to it is degenerate
  good = [{"params": 1e6 * 2 ** i, "tokens": 2e7 * 3 ** (i % 3), "loss": 4.0 - 0.1 * i} for i in range(8)]
  _table(ws, "table.csv", good)
  _write(ws / "table.xlsx", b"PK\x03\x04 not really a spreadsheet")
  _table(ws, "no-loss.csv", [{k: v for k, v in r.items() if k != "loss"} for r in good])
  _table(ws, "one-size.csv", [{"params": r["params"], "loss": r["loss"]} for r in good])
  _table(ws, "text-value.csv", [dict(r, params="big" if i == 3 else r["params"]) for i, r in enumerate(good)])
  _table(ws, "negative.csv", [{"params": r["params"], "flops": -1.0 if i == 2 else 6 * r["params"] * r["tokens"],
                               "loss": r["loss"]} for i, r in enumerate(good)])
  _table(ws, "nan-loss.csv", [dict(r, loss=float("nan") if i == 5 else r["loss"]) for i, r in enumerate(good)])
  _table(ws, "empty.csv", None)
  _table(ws, "short.csv", good[:2])
  _write(ws / "binary.csv", bytes(range(256)) * 8)
  return ws, run


def _snapshot(ws: pathlib.Path) -> dict:
  return {str(p.relative_to(ws)): (p.stat().st_mtime_ns, p.read_bytes() if p.is_file() else None)
          for p in sorted(ws.rglob("*"))}


def _argv(case: Case, ws: pathlib.Path, run: pathlib.Path) -> list[str]:
  return [a.replace("{ws}", str(ws)).replace("{run}", str(run)) for a in case.argv]


def _check_message(case: Case, err: str, ws: pathlib.Path, run: pathlib.Path) -> None:
  field = case.field.replace("{ws}", str(ws)).replace("{run}", str(run))
  assert err.endswith("\n") and err.count("\n") == 1, f"{case.name}: not one line: {err!r}"
  assert err.startswith(f"mdm-lab: error: {field}"), f"{case.name}: field {field!r} not named first: {err!r}"
  fix = case.fix.replace("{ws}", str(ws))
  assert fix in err, f"{case.name}: fix {fix!r} not in {err!r}"
  assert "Traceback" not in err


def test_there_are_at_least_thirty_cases_over_every_boundary():
  assert len({c.name for c in CASES}) == len(CASES) >= 30
  assert {c.argv[0] for c in CASES} == {"train", "sweep", "data", "fit", "sample", "elbo"}
  assert set(SUBPROCESS_CASES) <= {c.name for c in CASES}


def test_the_workspace_is_good_where_it_is_not_deliberately_bad(workspace):
  """The good data directory, spec and table pass, so each bad case fails for its own reason only."""
  from analysis.table import load_table
  from mdm_jax.config import load_config
  from mdm_jax.data import mixture
  from sweeps.plan import make_plan
  from sweeps.spec import load_spec
  ws, _ = workspace
  cfg = load_config("tiny", [*(f"{k}={v}" for k, v in TINY.items()), f"data.source={ws / 'data'}"])
  assert next(mixture.from_config(cfg).iterator())["tokens"].shape == (TINY["batch.logical"], TINY["data.seq_len"])
  assert len(make_plan(load_spec(ws / "spec.yaml")).runs) == 1
  assert len(load_table(ws / "table.csv")) == 8


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_one_line_naming_the_field_and_the_fix_with_exit_code_2(case, workspace, capsys):
  ws, run = workspace
  before = _snapshot(ws)
  capsys.readouterr()
  code = main(_argv(case, ws, run))
  out, err = capsys.readouterr()
  assert code == 2, f"{case.name}: exit {code}; stderr {err[-2000:]!r}"
  _check_message(case, err, ws, run)
  after = _snapshot(ws)
  if case.moves_aside:   # moved to checkpoints.corrupt/, byte for byte
    assert sorted(v[1] for v in after.values() if v[1] is not None) == sorted(
        v[1] for v in before.values() if v[1] is not None)
  else:
    assert after == before, f"{case.name}: changed {sorted(set(after.items()) ^ set(before.items()))[:5]}"


@pytest.mark.parametrize("name", SUBPROCESS_CASES)
def test_bad_input_through_the_console_script(name, workspace):
  ws, run = workspace
  case = next(c for c in CASES if c.name == name)
  script = pathlib.Path(sys.executable).parent / "mdm-lab"
  command = [str(script)] if script.exists() else [sys.executable, "-m", "labs.cli"]
  before = _snapshot(ws)
  proc = subprocess.run(command + _argv(case, ws, run), env=subprocess_env(), capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 2, proc.stderr[-2000:]
  _check_message(case, proc.stderr, ws, run)
  assert _snapshot(ws) == before

