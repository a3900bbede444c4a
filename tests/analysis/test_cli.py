"""`mdm-lab fit` through the real dispatcher: outputs, fit.json keys, figures, and exit code 2 on bad tables."""
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from labs.cli import main
from tests.analysis.conftest import CHINCHILLA_TRUTH, synthetic_frame
from tests.analysis.test_envelope import curve_frame
from tests.analysis.test_isoflop import isoflop_frame

PARAMETRIC_KEYS = {"E", "A", "B", "alpha", "beta", "objective", "a", "b", "diagnostics"}
ISOFLOP_KEYS = {"vertices", "a", "b", "k_params", "k_tokens", "dropped_budgets", "diagnostics"}


def test_approach3_on_a_table_with_a_derived_column(tmp_path, capsys):
  df = synthetic_frame(CHINCHILLA_TRUTH, n_grid=5, d_grid=5, noise=0.002, seed=1)  # 25 rows x 4,500 starts
  df["flops"] = 6 * df.params * df.tokens
  df.drop(columns="tokens").to_csv(tmp_path / "runs.csv", index=False)
  code = main(["fit", str(tmp_path / "runs.csv"), "--method", "approach3", "--out", str(tmp_path / "out"),
               "--convention", "total", "--bootstrap", "30", "--seed", "3", "--formats", "png"])
  assert code == 0
  out = capsys.readouterr().out
  assert "tokens derived as flops / (6·params)" in out and "alpha 95% CI" in out
  fit = json.loads((tmp_path / "out" / "fit.json").read_text())
  assert PARAMETRIC_KEYS <= set(fit)
  assert fit["alpha"] == pytest.approx(CHINCHILLA_TRUTH["alpha"], abs=0.02)
  assert fit["conventions"] == {"params": "total", "flops": "given"}
  assert fit["estimator"]["reduction"] == "sum" and fit["estimator"]["n_starts"] == 4500
  assert fit["bootstrap"]["seed"] == 3 and fit["bootstrap"]["n_resamples"] == 30
  for name in ("frontier", "loss_vs_compute", "residuals", "bootstrap"):
    assert (tmp_path / "out" / f"{name}.png").stat().st_size > 1000


@pytest.mark.parametrize("vertex, axis", [("parabola", "params"), ("akima", "tokens")])
def test_approach2_writes_vertices_and_dropped_budgets(tmp_path, vertex, axis):
  shift = np.array([0, 0, 0, 1.5, 0, 0, 0])
  isoflop_frame(shift=shift).to_parquet(tmp_path / "iso.parquet")
  code = main(["fit", str(tmp_path / "iso.parquet"), "--method", "approach2", "--out", str(tmp_path / "o"),
               "--vertex", vertex, "--axis", axis, "--budget-precision", "2", "--formats", "svg"])
  assert code == 0
  fit = json.loads((tmp_path / "o" / "fit.json").read_text())
  assert ISOFLOP_KEYS <= set(fit)
  assert len(fit["vertices"]) == 6 and len(fit["dropped_budgets"]) == 1
  assert fit["estimator"]["profile"] == f"{vertex} in {'log N' if axis == 'params' else 'log D'}"
  assert (tmp_path / "o" / "isoflop_profiles.svg").stat().st_size > 1000


def _write_curve_runs(root, frame):
  """Run directories (COMMON.md format) whose eval losses follow the synthetic training curves."""
  for run_id, g in frame.groupby("run_id"):
    run_dir = root / "runs" / run_id
    run_dir.mkdir(parents=True)
    lines = [{"step": int(r.step), "tokens": r.tokens, "flops": r.flops, "eval/loss": r.loss} for r in g.itertuples()]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in lines))
    n = int(g.params.iloc[0])
    run = {"run_id": run_id, "status": "done", "config": {"optim": {"lr_schedule": "constant"}},
           "params": {"total": n, "non_embedding": n, "with_head": n, "with_attention": n},
           "flops": {"convention": "noncausal"}, "final": lines[-1]}
    (run_dir / "run.json").write_text(json.dumps(run))


def test_approach1_from_run_directories_and_vpnls_from_a_table(tmp_path):
  _write_curve_runs(tmp_path / "sweep", curve_frame(sizes=np.geomspace(1e7, 1e10, 12), steps=20))
  assert main(["fit", str(tmp_path / "sweep"), "--method", "approach1", "--per-step", "--out", str(tmp_path / "a1"),
               "--formats", "png"]) == 0
  fit = json.loads((tmp_path / "a1" / "fit.json").read_text())
  assert fit["method"] == "approach1" and "LR schedule" in fit["diagnostics"]["warnings"][0]
  assert fit["conventions"] == {"params": "total", "flops": "noncausal"}
  assert fit["a"] == pytest.approx(CHINCHILLA_TRUTH["beta"] / (CHINCHILLA_TRUTH["alpha"] + CHINCHILLA_TRUTH["beta"]),
                                   abs=0.05)
  assert (tmp_path / "a1" / "frontier.png").stat().st_size > 1000
  assert main(["fit", str(tmp_path / "sweep"), "--method", "approach1", "--out", str(tmp_path / "finals")]) == 2
  synthetic_frame(CHINCHILLA_TRUTH).to_csv(tmp_path / "s.csv", index=False)
  assert main(["fit", str(tmp_path / "s.csv"), "--method", "vpnls", "--out", str(tmp_path / "vp"),
               "--formats", ""]) == 0
  fit = json.loads((tmp_path / "vp" / "fit.json").read_text())
  assert PARAMETRIC_KEYS <= set(fit) and fit["beta"] == pytest.approx(CHINCHILLA_TRUTH["beta"], rel=1e-4)


@pytest.mark.parametrize("mutate, column", [
    (lambda df: df.assign(params=-df.params), "params"),
    (lambda df: df.assign(loss=np.where(df.index == 3, np.nan, df.loss)), "loss"),
    (lambda df: df.drop(columns=["loss"]), "loss"),
    (lambda df: df.drop(columns=["params", "flops"]), "params"),
    (lambda df: df.head(4), "loss"),
])
def test_bad_tables_exit_2_with_one_line_naming_the_column(tmp_path, capsys, mutate, column):
  df = synthetic_frame(CHINCHILLA_TRUTH)
  df["flops"] = 6 * df.params * df.tokens
  mutate(df).to_csv(tmp_path / "bad.csv", index=False)
  code = main(["fit", str(tmp_path / "bad.csv"), "--method", "approach3", "--out", str(tmp_path / "o")])
  err = capsys.readouterr().err.strip()
  assert code == 2 and err.startswith(f"mdm-lab: error: {column}:") and "\n" not in err


def test_too_few_budgets_exit_2(tmp_path, capsys):
  isoflop_frame(budgets=[1e20]).to_csv(tmp_path / "one.csv", index=False)
  assert main(["fit", str(tmp_path / "one.csv"), "--method", "approach2", "--out", str(tmp_path / "o")]) == 2
  assert capsys.readouterr().err.startswith("mdm-lab: error: flops:")


def test_subprocess_exit_code(tmp_path):
  pd.DataFrame({"params": [1e8, 0.0], "tokens": [1e9, 1e9], "loss": [3.0, 2.9]}).to_csv(tmp_path / "b.csv",
                                                                                        index=False)
  proc = subprocess.run([sys.executable, "-m", "labs.cli", "fit", str(tmp_path / "b.csv"), "--method", "vpnls",
                         "--out", str(tmp_path / "o")], capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and "params:" in proc.stderr
