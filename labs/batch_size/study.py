"""Batch-size study (METHOD.md §4.2–4.3): loss vs batch at a fixed token budget, with and without the κ rule.

Two stages, each a sweep spec expanded by `sweeps.spec` (written to OUT/pilot.yaml and OUT/batch.yaml, runnable
with `mdm-lab sweep run` as well) and trained here as vmapped groups (`mdm_jax.group.train_group`):

1. pilot: a learning-rate sweep without κ at B ∈ {4, 16} sequences and D ∈ {D_base/4, D_base} tokens. The optimal
   LR per (B, D) gives γ and the base LR through `analysis.batchlaws.fit_gamma` (η* = η_base·√κ).
2. batch: at D = D_base, B ∈ {4, …, 64} (16×), the physical batch chosen freely (= logical): with κ (LR × {¼ … 4}
   around the κ prediction, to see that the prediction sits at the optimum) and without κ (the base values).

Every run evaluates the same 64 validation rows (eval batches × batch = 64). The model is tiny (d = 64, L = 2, seq
64) and D_base = 65,536 tokens, so the study fits the CPU budget; B_crit is where the κ runs leave the best loss
by more than `--tolerance`. `analyse.py` fits, plots and writes report.md.

  python -m labs.batch_size.study --out /tmp/batch_size    # then labs/batch_size/report.md and figures/
"""
import argparse
import json
import pathlib
import time

import yaml

BASE_SET = {
    "model.d_model": 64, "model.n_heads": 4, "model.d_ff": 256, "model.n_layers": 2, "data.seq_len": 64,
    "train.steps": 1, "train.log_every": 8,   # steps: replaced by the tokens axis "train.eval_every": 1_000_000, "train.checkpoint_every": 1_000_000,
    "optim.lr_schedule": "cosine", "optim.warmup": 0.05,
}
EVAL_ROWS = 64
B_BASE, D_BASE = 16, 65_536
PILOT_BATCHES, PILOT_TOKENS = (4, 16), (D_BASE // 4, D_BASE)
PILOT_LRS = {"log": [1.0e-3, 3.2e-2, 6]}
SWEEP_BATCHES = (4, 8, 16, 32, 64)
LR_MULTS = (0.25, 0.5, 1.0, 2.0, 4.0)   # around the κ-predicted LR; one vmapped group of 6 with the no-κ run


def _batch_axis(batches) -> dict:
  return {"zip": {"batch": list(batches), "physical_batch": list(batches),
                  "train.eval_batches": [EVAL_ROWS // b for b in batches]}}


def pilot_spec() -> dict:
  return {"name": "batch-size-pilot", "base": "tiny", "set": dict(BASE_SET),
          "grid": {"product": [_batch_axis(PILOT_BATCHES), {"tokens": list(PILOT_TOKENS)}, {"lr": PILOT_LRS}]}}


def batch_spec(lr_base: float, gamma: float) -> dict:
  sde = {"sde.base_batch": B_BASE, "sde.base_tokens": D_BASE, "sde.gamma": round(gamma, 6)}
  return {"name": "batch-size-kappa", "base": "tiny", "set": {**BASE_SET, **sde, "optim.lr": lr_base},
          "grid": {"product": [_batch_axis(SWEEP_BATCHES), {"tokens": [D_BASE]}, {"union": [
              {"sde.enabled": [True], "lr": [lr_base * m for m in LR_MULTS]},
              {"sde.enabled": [False], "lr": [lr_base]}]}]}}


def run_spec(spec_dict: dict, out: pathlib.Path, name: str) -> list[pathlib.Path]:
  """Expand a spec, train its unfinished runs in vmapped groups; returns the run directories (resumable)."""
  from mdm_jax import runio
  from mdm_jax.group import group_key, train_group
  from sweeps.spec import Spec
  from mdm_jax.config import CONFIG_DIR
  text = yaml.safe_dump(spec_dict, sort_keys=False)
  (out / f"{name}.yaml").write_text(text)
  spec = Spec(spec_dict, CONFIG_DIR, text)
  cfgs = [spec.resolve(p) for p in spec.points()]
  dirs = [out / "runs" / c.fingerprint() for c in cfgs]
  groups: dict = {}
  for cfg, d in zip(cfgs, dirs):
    done = (d / runio.RUN_JSON).exists() and runio.read_json(d / runio.RUN_JSON).get("status") in ("done", "diverged")
    if not done:
      groups.setdefault(group_key(cfg), []).append((cfg.replace(output_dir=str(d)), d))
  for i, members in enumerate(groups.values()):
    t0 = time.perf_counter()
    results = train_group([c for c, _ in members], [d for _, d in members])
    losses = [round(r.final.get("eval/loss", float("nan")), 3) for r in results]
    print(f"{name} group {i + 1}/{len(groups)}: {len(members)} runs, B={members[0][0].batch.logical}, "
          f"steps={members[0][0].total_steps}, {time.perf_counter() - t0:.0f}s, eval/loss {losses}", flush=True)
  return dirs


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True, help="work directory: specs and run directories")
  parser.add_argument("--tolerance", type=float, default=0.01, help="relative loss rise that marks B_crit")
  parser.add_argument("--report-dir", default=str(pathlib.Path(__file__).parent), help="report.md and figures/")
  args = parser.parse_args(argv)
  from labs.batch_size import analyse
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  t0 = time.perf_counter()
  pilot_dirs = run_spec(pilot_spec(), out, "pilot")
  pilot = analyse.fit_pilot(analyse.collect(pilot_dirs), B_BASE, D_BASE)
  print("pilot:", json.dumps({k: pilot[k] for k in ("gamma", "gamma_se", "lr_base", "source")}), flush=True)
  batch_dirs = run_spec(batch_spec(pilot["lr_base"], pilot["gamma"]), out, "batch")
  minutes = (time.perf_counter() - t0) / 60
  summary = analyse.report(analyse.collect(pilot_dirs), analyse.collect(batch_dirs), pilot, args.tolerance,
                           pathlib.Path(args.report_dir), minutes)
  print(json.dumps(summary, indent=1))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
