"""The lab framework: `mdm-lab lab run|report|list` (labs/lab_cli.py), lab loading and sessions (labs/common.py),
the facts every report states (labs/report.py) and `run_sweep` (sweeps/launch.py), on a tiny real sweep."""
import json
import pathlib
import textwrap

import pytest
import yaml

from labs import common
from labs.cli import main
from labs.report import Report
from sweeps.launch import run_sweep

LABS = pathlib.Path(__file__).parents[2] / "labs"
# d=32, 1 layer, seq 32, batch 4, 4 steps: a run takes about a second once compiled (one shape for the module).
TINY = {"model.d_model": 32, "model.n_layers": 1, "model.n_heads": 1, "model.d_ff": 64, "data.seq_len": 32,
        "batch.logical": 4, "batch.physical": 4, "train.steps": 4, "train.log_every": 2, "train.eval_every": 4,
        "train.checkpoint_every": 100, "train.eval_batches": 1, "diffusion.eval_t_points": 2}
HARDWARE = {"platform": "cpu", "device_kind": "cpu", "device_count": 1, "cpu_count": 2, "processor": "x86_64"}
VERSIONS = {"python": "3.11.7", "jax": "0.10.2", "flax": "0.12.8", "optax": "0.2.8", "numpy": "2.4.6"}


def write_lab(directory: pathlib.Path, sweep_spec: dict | None = None) -> pathlib.Path:
  """A user's lab folder: run() sweeps spec.yaml (if given) into OUT/sweeps/tiny; report() states the run count."""
  directory.mkdir(parents=True, exist_ok=True)
  if sweep_spec is not None:
    (directory / "spec.yaml").write_text(yaml.safe_dump(sweep_spec, sort_keys=False))
  (directory / "lab.py").write_text(textwrap.dedent(f'''\
      """A test lab: one tiny sweep."""
      from labs.report import Report


      def run(ctx):
        if {sweep_spec is not None}:
          ctx.sweep("tiny", ctx.spec("spec.yaml"))


      def report(ctx):
        runs = sorted(ctx.sweep_dir("tiny").glob("runs/*/run.json"))
        return Report("Test lab", "A tiny sweep.").add("Runs seen", f"{{len(runs)}} run directories")
      '''))
  return directory


def write_run(sweep_dir: pathlib.Path, run_id: str, status: str, flops: float, seconds: float) -> dict:
  """A run directory's run.json in the trainer's format (only the fields the facts read are filled)."""
  run = {"run_id": run_id, "status": status, "config": {}, "params": {"total": 1000, "non_embedding": 100},
         "flops": {"train_per_token": 6000.0, "convention": "noncausal", "budget": flops},
         "final": {"step": 10, "flops": flops, "eval/loss": 4.0}, "wall_time": seconds, "hardware": HARDWARE,
         "versions": VERSIONS, "diverged_at": None, "error": None}
  path = sweep_dir / "runs" / run_id / "run.json"
  path.parent.mkdir(parents=True)
  path.write_text(json.dumps(run))
  return run


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory):
  """Three real runs (three seeds) swept by `run_sweep` into a lab's OUT/sweeps/tiny, then swept again."""
  root = tmp_path_factory.mktemp("lab")
  spec = {"name": "tiny", "base": "tiny", "set": TINY, "grid": {"seed": [0, 1, 2]}}
  lab_dir = write_lab(root / "lab", spec)
  out = root / "out"
  first = run_sweep(lab_dir / "spec.yaml", out / "sweeps" / "tiny", "inprocess", progress=False, quiet=True)
  stamps = {p: p.stat().st_mtime_ns for p in (out / "sweeps" / "tiny").glob("runs/*/*")}
  again = run_sweep(lab_dir / "spec.yaml", out / "sweeps" / "tiny", "inprocess", progress=False, quiet=True)
  return {"lab": lab_dir, "out": out, "first": first, "again": again, "stamps": stamps}


def test_run_sweep_trains_every_planned_run_once(tiny_sweep):
  assert tiny_sweep["first"]["done"] == 3 and sum(tiny_sweep["first"].values()) == 3
  assert tiny_sweep["again"] == tiny_sweep["first"]
  # the second sweep found nothing unfinished: no run file was rewritten
  assert {p: p.stat().st_mtime_ns for p in tiny_sweep["stamps"]} == tiny_sweep["stamps"]
  assert (tiny_sweep["out"] / "sweeps" / "tiny" / "spec.yaml").is_file()


def test_sweep_facts_sum_the_run_files_of_a_real_sweep(tiny_sweep):
  runs = [json.loads(p.read_text()) for p in sorted(tiny_sweep["out"].glob("sweeps/*/runs/*/run.json"))]
  facts = common.sweep_facts(tiny_sweep["out"])
  assert facts["runs"] == len(runs) == 3 and facts["by_status"] == {"done": 3}
  assert facts["train_flops"] == pytest.approx(sum(r["final"]["flops"] for r in runs), rel=1e-12)
  # the trainer's FLOPs: steps x tokens per step x train FLOPs per token, for every run
  assert facts["train_flops"] == pytest.approx(sum(4 * 4 * 32 * r["flops"]["train_per_token"] for r in runs))
  assert facts["run_seconds"] == pytest.approx(sum(r["wall_time"] for r in runs)) and facts["run_seconds"] > 0
  assert facts["hardware"]["platform"] == "cpu" and facts["versions"]["jax"]


def test_lab_run_then_report_through_the_cli(tiny_sweep, capsys):
  out = tiny_sweep["out"]
  assert main(["lab", "run", str(tiny_sweep["lab"]), "--out", str(out), "--no-progress"]) == 0
  assert f"wrote {out / 'report.md'}" in capsys.readouterr().out
  text = (out / "report.md").read_text()
  assert text.startswith("# Test lab\n\nA tiny sweep.\n") and "## Runs seen\n\n3 run directories" in text
  assert "- Runs: 3 (3 done)" in text and "1 `lab run` session(s) (inprocess)" in text
  (out / "report.md").unlink()
  assert main(["lab", "report", str(tiny_sweep["lab"]), "--out", str(out)]) == 0
  assert "- Runs: 3 (3 done)" in (out / "report.md").read_text()
  assert len(json.loads((out / "lab.json").read_text())["sessions"]) == 1   # a report is not a session


def test_report_states_the_facts_from_hand_written_run_files(tmp_path):
  runs = [write_run(tmp_path / "sweeps" / "a", "r1", "done", 1.5e12, 30.0),
          write_run(tmp_path / "sweeps" / "a", "r2", "done", 2.25e12, 45.5),
          write_run(tmp_path / "sweeps" / "b", "r3", "failed", 1.0e11, 4.5)]
  (tmp_path / "sweeps" / "b" / "runs" / "torn").mkdir()
  (tmp_path / "sweeps" / "b" / "runs" / "torn" / "run.json").write_text('{"status": "do')   # skipped, not fatal
  common.record_session(tmp_path, tmp_path, "ci", "vmap", 61.0)
  common.record_session(tmp_path, tmp_path, "ci", "inprocess", 60.0)
  ctx = common.LabContext(tmp_path, tmp_path)
  report = Report("Title", "Summary.").add("Answer", "a = 0.5")
  report.conventions["params"] = "non-embedding"
  text = report.write(ctx).read_text()
  facts = dict(line[2:].split(": ", 1) for line in text.split("## Setup\n\n")[1].splitlines() if line)
  assert facts["Runs"] == "3 (2 done, 1 failed)"
  assert facts["Total training compute"] == f"{sum(r['final']['flops'] for r in runs):.3g} FLOPs" == "3.85e+12 FLOPs"
  assert facts["Wall time"] == "2m01s over 2 `lab run` session(s) (vmap, inprocess); 1m20s summed over runs"
  assert facts["Hardware"] == "1 × cpu (cpu), 2 CPU cores, x86_64"
  assert facts["Software"] == "python 3.11.7, jax 0.10.2, flax 0.12.8, optax 0.2.8"
  assert facts["Convention, params"] == "non-embedding"
  assert facts["Convention, flops"].startswith("non-causal") and facts["Convention, loss"].startswith("masked")
  assert text.index("## Answer") < text.index("## Setup")


def test_sessions_accumulate_in_lab_json(tmp_path):
  first = common.record_session(tmp_path, LABS / "quickstart", "default", "inprocess", 12.34)
  second = common.record_session(tmp_path, LABS / "quickstart", "ci", "vmap", 5.0)
  assert first["lab"] == "quickstart" and len(first["sessions"]) == 1
  assert [(s["seconds"], s["runner"], s["scale"]) for s in second["sessions"]] == [(12.3, "inprocess", "default"),
                                                                                    (5.0, "vmap", "ci")]
  assert common.lab_record(tmp_path) == second and common.lab_record(tmp_path / "none") == {"sessions": []}


def test_lab_run_sessions_accumulate_through_the_cli(tmp_path):
  lab = write_lab(tmp_path / "lab")
  for _ in range(2):
    assert main(["lab", "run", str(lab), "--out", str(tmp_path / "out"), "--no-progress"]) == 0
  assert len(json.loads((tmp_path / "out" / "lab.json").read_text())["sessions"]) == 2
  assert "over 2 `lab run` session(s)" in (tmp_path / "out" / "report.md").read_text()


def test_a_folder_without_lab_py_is_a_user_error_naming_it(tmp_path, capsys):
  folder = tmp_path / "not_a_lab"
  folder.mkdir()
  for command in ("run", "report"):
    assert main(["lab", command, str(folder), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert str(folder) in err and "no lab.py" in err and "quickstart" in err   # the fix lists the shipped labs


def test_a_lab_without_report_is_a_user_error(tmp_path, capsys):
  (tmp_path / "lab.py").write_text('"""No report."""\n\ndef run(ctx):\n  pass\n')
  assert main(["lab", "run", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
  assert "defines no report(ctx)" in capsys.readouterr().err


def test_out_must_be_a_directory(tmp_path, capsys):
  (tmp_path / "file").write_text("")
  assert main(["lab", "report", str(LABS / "quickstart"), "--out", str(tmp_path / "file")]) == 2
  assert "is not a directory" in capsys.readouterr().err


def test_lab_list_names_the_shipped_labs_with_their_one_line_description(capsys):
  assert main(["lab", "list"]) == 0
  lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
  assert "labs/quickstart" in lines
  doc = (LABS / "quickstart" / "lab.py").read_text().split('"""')[1].strip().splitlines()[0]
  assert lines["labs/quickstart"].endswith(doc)


def test_spec_edits_replace_top_level_fields(tmp_path):
  lab = write_lab(tmp_path / "lab", {"name": "tiny", "base": "tiny", "set": TINY, "grid": {"seed": [0]}})
  ctx = common.LabContext(lab, tmp_path / "out")
  spec = ctx.spec("spec.yaml", grid={"seed": [0, 1]})
  assert [p["seed"] for p in spec.points()] == [0, 1] and spec.base.model.d_model == 32
  assert yaml.safe_load(spec.text)["grid"] == {"seed": [0, 1]}
  assert ctx.spec("spec.yaml").points() == [{"seed": 0}]
  assert ctx.sweep_dir("x") == tmp_path / "out" / "sweeps" / "x" and ctx.figures.is_dir()
