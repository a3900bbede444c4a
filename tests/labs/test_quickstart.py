"""The quickstart lab end to end at --scale ci, through the `mdm-lab` command: report with exponents, CIs and facts,
figures, clean diagnostics; `lab report` rebuilds it without training; the notebook runs on the same output.
The lab runs once per module (~2-3 min on 2 cores); every test reads that output."""
import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow   # minutes of training: run once per CI (Python 3.11), see .ci/run

LAB = pathlib.Path(__file__).parents[2] / "labs" / "quickstart"
ROOT = LAB.parents[1]


def mdm_lab(*args, timeout=900) -> subprocess.CompletedProcess:
  script = pathlib.Path(sys.executable).with_name("mdm-lab")
  cmd = [str(script)] if script.is_file() else [sys.executable, "-m", "labs.cli"]
  return subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def tree_state(directory: pathlib.Path) -> dict:
  return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def ci_out(tmp_path_factory):
  out = tmp_path_factory.mktemp("quickstart") / "out"
  proc = mdm_lab("lab", "run", str(LAB), "--out", str(out), "--scale", "ci", "--no-progress")
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  return {"out": out, "proc": proc, "report": (out / "report.md").read_text()}


def number_with_ci(text: str, name: str) -> list[tuple[float, float, float]]:
  pattern = rf"{name} = (-?\d+\.\d+) \[(-?\d+\.\d+), (-?\d+\.\d+)\]"
  return [tuple(map(float, m)) for m in re.findall(pattern, text)]


def test_lab_run_writes_a_clean_report(ci_out):
  assert f"wrote {ci_out['out'] / 'report.md'}" in ci_out["proc"].stdout
  assert "need attention" not in ci_out["proc"].stdout
  report = ci_out["report"]
  assert "**Diagnostics clean**:" in report and "excluded" not in report.split("## Fit diagnostics")[1]
  rows = [line for line in report.splitlines() if line.endswith("| interior minimum |")]
  assert len(rows) == 3   # every budget's minimum lies strictly inside its sizes


def test_report_gives_exponents_with_cis_that_match_an_independent_fit(ci_out):
  from analysis import fit_isoflop, load_runs
  report = ci_out["report"]
  a_values, b_values = number_with_ci(report, "a"), number_with_ci(report, "b")
  assert len(a_values) == len(b_values) == 3   # Approach 2, Approach 3 and VPNLS in the answer
  for value, lo, hi in a_values + b_values:
    assert lo <= value <= hi or lo <= hi   # a percentile CI need not contain the full-sample fit, but is ordered
    assert lo <= hi
  fit = fit_isoflop(load_runs(ci_out["out"] / "sweeps" / "isoflop_ci"), budget_precision=2)
  assert a_values[0][0] == pytest.approx(fit.a, abs=5e-4) and b_values[0][0] == pytest.approx(fit.b, abs=5e-4)
  written = json.loads((ci_out["out"] / "fits" / "approach2" / "fit.json").read_text())
  assert written["a"] + written["b"] == pytest.approx(1.0)   # D* = C / 6N* at every vertex
  assert written["bootstrap"]["quantities"]["a"]["ci"][0] == pytest.approx(a_values[0][1], abs=5e-4)
  for method in ("approach3", "vpnls"):
    assert (ci_out["out"] / "fits" / method / "fit.json").is_file()


def test_report_states_the_facts(ci_out):
  runs = [json.loads(p.read_text()) for p in (ci_out["out"] / "sweeps").glob("*/runs/*/run.json")]
  setup = ci_out["report"].split("## Setup\n")[1]
  assert f"- Runs: {len(runs)} ({len(runs)} done)" in setup and len(runs) == 12
  assert f"- Total training compute: {sum(r['final']['flops'] for r in runs):.3g} FLOPs" in setup
  assert "- Hardware: 1 × cpu (cpu)" in setup and "1 `lab run` session(s) (inprocess)" in setup
  assert "- Convention, params: total" in setup and "- Convention, flops: non-causal" in setup


def test_figures_exist_and_are_embedded(ci_out):
  figures = ci_out["out"] / "figures"
  for stem in ("isoflop", "frontier", "frontier_approach3"):
    for suffix in ("png", "pdf"):
      assert (figures / f"{stem}.{suffix}").stat().st_size > 1000
    assert f"(figures/{stem}.png)" in ci_out["report"]


def test_lab_report_rebuilds_from_finished_runs_without_training(ci_out):
  out = ci_out["out"]
  before = tree_state(out / "sweeps")
  sessions = json.loads((out / "lab.json").read_text())["sessions"]
  (out / "report.md").unlink()
  proc = mdm_lab("lab", "report", str(LAB), "--out", str(out), "--scale", "ci", timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert tree_state(out / "sweeps") == before   # no run trained, resumed or rewritten
  assert json.loads((out / "lab.json").read_text())["sessions"] == sessions
  assert (out / "report.md").read_text() == ci_out["report"]   # same runs, fixed bootstrap seed: same report


def test_report_at_a_scale_that_did_not_run_is_a_user_error(ci_out):
  proc = mdm_lab("lab", "report", str(LAB), "--out", str(ci_out["out"]), timeout=300)
  assert proc.returncode == 2 and "no runs of the 'default' scale" in proc.stderr


def test_notebook_runs_on_the_ci_output(ci_out):
  import nbclient
  import nbformat
  nb = nbformat.read(LAB / "analysis.ipynb", as_version=4)
  assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")   # stored stripped
  os.environ["MDM_LAB_LAB_OUT"] = str(ci_out["out"])   # the kernel inherits this process's environment
  try:
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
  finally:
    del os.environ["MDM_LAB_LAB_OUT"]
  text = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []) if o.get("name") == "stdout")
  fit = json.loads((ci_out["out"] / "fits" / "approach2" / "fit.json").read_text())
  assert f"Approach 2: a = {fit['a']:.3f}" in text
  images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
  assert len(images) == 3
