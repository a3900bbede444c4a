"""Train-step benchmark: tokens/s, FLOP/s and MFU of each implementation, bracketed against torch.compile.

  python benchmarks/train_step.py [--sizes tiny,small] [--rounds N] [--impls torch-compile,torch-eager,...]

Prints one JSON object per line: one per (name, impl), then one with the measured fp32 matmul ceiling. Progress
goes to stderr. Method: benchmarks/harness.py and shared/docs/CPU_PERF.md (one process per implementation,
interleaved blocks ref/cand/ref, median over rounds of the step-time ratio, loaded blocks discarded and retried).

Implementations: torch-compile (the reference), torch-eager (benchmarks/torch_reference.py), torch-compile+thp (the
reference given mdm-lab's huge-page tunable, mdm_jax/hostmem.py), jax-probe
(benchmarks/jax_probe.py, plain JAX), mdm-lab, the lab's own train program, mdm-lab-1step, the same with one
step per device call (train.steps_per_call=1), and mdm-lab-xla-attention, the same with XLA's attention dots
instead of the CPU attention kernel (MDM_LAB_CPU_ATTENTION=0, mdm_jax/cpu_attention.py). mdm-lab must provide:

  mdm_jax.bench.make_step(name_or_dims, batch: int, seq: int) -> (step_fn, state)

  * name_or_dims: "tiny" | "small" or a dict with d, n_layers, n_heads, ff, vocab (see benchmarks/sizes.py).
  * It builds the lab's model, masked-diffusion loss and optimizer with the settings of benchmarks/sizes.py and the
    architecture of benchmarks/torch_reference.py, on a fixed batch of `batch` x `seq` tokens uniform in
    [0, vocab-1) ([MASK] = vocab-1; benchmarks.sizes.fixed_batch gives the same batch as the reference).
  * `state = step_fn(state)` runs `step_fn.steps_per_call` full train steps (1 if the attribute is absent; the
    lab's trainer runs several per device call, mdm_jax.step.chunked), each with fresh t and mask (from a key
    carried in `state`), forward, backward, gradient clipping, AdamW update. It returns only when the steps are
    done (block on the new state, e.g. jax.block_until_ready), and does no other host sync, printing or
    logging. `state` is opaque to the harness and threaded from call to call, so it may be donated.
  * The first calls may compile: the harness runs warm-up steps before any timing.
If `mdm_jax.bench` is not importable the mdm-lab line is {"name", "impl": "mdm-lab", "skipped": reason}.

Trust: a block is clean when other work on the machine took <= --max-other-cores during it; `clean_rounds` counts
rounds whose three blocks were clean, and ratios and tokens/s use only clean rounds/blocks when there are any.
`ceiling_clean` false means the ceiling was measured under load (too low), so MFU is inflated. Torch's spinning
OpenMP threads slow down far more than XLA's pool when other processes share the cores: loaded rounds favour JAX.
"""

import argparse
import importlib.metadata
import importlib.util
import json
import math
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run as a script from anywhere

from benchmarks import harness  # noqa: E402  (stdlib-only imports; the workers load torch or jax)
from benchmarks import sizes  # noqa: E402
from mdm_jax import hostmem  # noqa: E402  (standard library only)
from mdm_jax.errors import UserError  # noqa: E402

REFERENCE = "torch-compile"
# Each implementation runs as its users run it: mdm-lab's processes carry the huge-page tunable (mdm_jax.hostmem);
# torch-compile+thp is torch.compile given the same tunable, to show what it alone is worth to torch.
_THP = {"GLIBC_TUNABLES": hostmem.TUNABLE} if hostmem.wanted() else {}
IMPLS = {
    "torch-compile": ("benchmarks.torch_reference", "make_bench_step", {"compile": True}, "torch", {}),
    "torch-eager": ("benchmarks.torch_reference", "make_bench_step", {"compile": False}, "torch", {}),
    "torch-compile+thp": ("benchmarks.torch_reference", "make_bench_step", {"compile": True}, "torch", _THP),
    "jax-probe": ("benchmarks.jax_probe", "make_step", {}, "jax", {}),
    "mdm-lab": ("mdm_jax.bench", "make_step", {}, "jax", _THP),
    "mdm-lab-1step": ("mdm_jax.bench", "make_step", {"steps_per_call": 1}, "jax", _THP),
    "mdm-lab-xla-attention": ("mdm_jax.bench", "make_step", {}, "jax", {**_THP, "MDM_LAB_CPU_ATTENTION": "0"}),
}


def _split_choices(flag: str, text: str, allowed) -> list[str]:
  items = [x.strip() for x in text.split(",") if x.strip()]
  unknown = [x for x in items if x not in allowed]
  if unknown or not items:
    raise UserError(flag, f"unknown or empty choice {unknown or text!r}", f"use a comma list of {sorted(allowed)}")
  return items


def parse_args(argv) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--sizes", default="tiny,small")
  p.add_argument("--impls", default=",".join(IMPLS))
  p.add_argument("--rounds", type=int, default=5)
  p.add_argument("--block-seconds", type=float, default=1.5, help="target length of one timed block")
  p.add_argument("--warmup-steps", type=int, default=3)
  p.add_argument("--max-other-cores", type=float, default=0.1, help="discard blocks with more background load")
  p.add_argument("--retries", type=int, default=2, help="retries of a loaded block before keeping the least loaded")
  p.add_argument("--wait-seconds", type=float, default=10.0, help="longest wait for a quiet machine per attempt")
  args = p.parse_args(argv)
  args.sizes = _split_choices("--sizes", args.sizes, sizes.SIZES)
  args.impls = _split_choices("--impls", args.impls, IMPLS)
  if REFERENCE not in args.impls:
    args.impls.insert(0, REFERENCE)  # every ratio is taken against torch.compile
  if args.rounds < 1:
    raise UserError("--rounds", f"must be >= 1, got {args.rounds}", "pass a positive count")
  return args


def start_workers(size: str, impls: list[str]) -> tuple[list, list[dict]]:
  """Spawns one worker per implementation (builds run in parallel); returns ready workers and skip lines."""
  cfg = sizes.SIZES[size]
  workers, skipped = [], []
  for impl in impls:
    module, function, extra, lib, env = IMPLS[impl]
    if importlib.util.find_spec(module.rsplit(".", 1)[0]) is None or importlib.util.find_spec(module) is None:
      skipped.append({"name": size, "impl": impl, "skipped": f"{module} is not importable"})
      continue
    kwargs = {"name_or_dims": size, "batch": cfg.batch, "seq": cfg.seq, **extra}
    workers.append(harness.Worker(harness.ImplSpec(impl, module, function, kwargs, lib, env)))
  ready = []
  for w in workers:
    if w.wait_ready() == "ok":
      ready.append(w)
    else:
      skipped.append({"name": size, "impl": w.spec.name, w.status: w.reason.strip().splitlines()[-1]})
      print(f"{w.spec.name}: {w.status}:\n{w.reason}", file=sys.stderr)
      w.close()
  return ready, skipped


def bench_size(size: str, args, ceilings: dict) -> list[dict]:
  """Warm-up, calibration, memory marks and the bracketed rounds for one size; returns its result rows."""
  cfg = sizes.SIZES[size]
  print(f"[{size}] building {', '.join(args.impls)}", file=sys.stderr, flush=True)
  workers, rows = start_workers(size, args.impls)
  try:
    by_name = {w.spec.name: w for w in workers}
    if REFERENCE not in by_name:
      raise RuntimeError(f"the reference {REFERENCE} could not be built: {rows}")
    for w in workers:  # compile all in parallel; nothing is timed yet
      w.send("steps", args.warmup_steps)
    for w in workers:
      w.recv("warm-up")
    calls, per_call, build_rss = {}, {}, {}
    for w in workers:  # calibrate on a quiet machine if possible; the fastest of three short runs
      harness.wait_for_quiet(args.max_other_cores, args.wait_seconds)
      call_s = min(w.call("steps", 2) for _ in range(3))
      calls[w.spec.name] = max(2, math.ceil(args.block_seconds / call_s))
      per_call[w.spec.name] = w.call("steps_per_call")
      build_rss[w.spec.name] = w.call("hwm")
      w.call("reset_hwm")
    print(f"[{size}] calls per block {calls}, steps per call {per_call}", file=sys.stderr, flush=True)
    ref = by_name[REFERENCE]
    out = harness.run_bracketed(ref, [w for w in workers if w is not ref], calls, args.rounds,
                                args.max_other_cores, args.retries, args.wait_seconds)
    flops_per_token = harness.train_flops_per_token(cfg.d, cfg.n_layers, cfg.n_heads, cfg.ff, cfg.vocab, cfg.seq)
    useful_per_token = harness.train_flops_per_token(cfg.d, cfg.n_layers, cfg.n_heads, cfg.ff, cfg.vocab, cfg.seq,
                                                     head_rows=sizes.MASKED_FRACTION)
    for w in workers:
      name, log = w.spec.name, out["logs"][w.spec.name]
      step_rss = w.call("hwm")
      tokens_per_s = cfg.tokens_per_step / statistics.median(log.kept_step_s())
      ratio, clean_rounds = harness.median_ratio(out["ratios"][name]) if name != REFERENCE else (1.0, None)
      rows.append({"name": size, "impl": name, "tokens_per_s": tokens_per_s, "ratio_vs_torch_compile": ratio,
                   "clean_rounds": clean_rounds, "ratio_rounds": [round(r, 4) for r, _ in out["ratios"].get(name, [])],
                   "flops_per_token": flops_per_token, "achieved_flops_per_s": tokens_per_s * flops_per_token,
                   "useful_flops_per_token": useful_per_token,
                   "peak_rss_mb": round(max(build_rss[name], step_rss), 1), "step_peak_rss_mb": round(step_rss, 1),
                   "calls_per_block": calls[name], "steps_per_call": per_call[name], **log.summary()})
    for w in workers:  # each library's own matmul peak, measured after the timing so that it disturbs nothing
      measure_ceiling(ceilings, w.spec.lib, lambda: w.call("peak"), args)
  finally:
    for w in workers:
      w.close()
  return rows


def keep_best(ceilings: dict, lib: str, measured: dict) -> None:
  if measured["flops_per_s"] > ceilings.get(lib, {"flops_per_s": 0.0})["flops_per_s"]:
    ceilings[lib] = {k: round(v, 3) if k == "other_cores" else v for k, v in measured.items()}


def measure_ceiling(ceilings: dict, lib: str, measure, args) -> None:
  """Like a timed block: wait for a quiet machine, retry a loaded measurement, keep the best."""
  for _ in range(args.retries + 1):
    harness.wait_for_quiet(args.max_other_cores, args.wait_seconds)
    measured = measure()
    keep_best(ceilings, lib, measured)
    if measured["other_cores"] <= args.max_other_cores:
      return


def main(argv=None) -> int:
  args = parse_args(argv)
  ceilings, rows = {}, []
  measure_ceiling(ceilings, "numpy", lambda: harness.matmul_peak("numpy"), args)
  for size in args.sizes:
    rows += bench_size(size, args, ceilings)
  measure_ceiling(ceilings, "numpy", lambda: harness.matmul_peak("numpy"), args)
  best = max(ceilings.values(), key=lambda c: c["flops_per_s"])
  ceiling = best["flops_per_s"]
  ceiling_clean = best["other_cores"] <= args.max_other_cores  # a loaded ceiling is low: MFU would be inflated
  for row in rows:
    if "tokens_per_s" in row:
      row.update(mfu=row["achieved_flops_per_s"] / ceiling, ceiling_flops_per_s=ceiling, ceiling_clean=ceiling_clean,
                 useful_mfu=row["tokens_per_s"] * row["useful_flops_per_token"] / ceiling)
    print(json.dumps(row), flush=True)
  versions = {p: importlib.metadata.version(p) for p in ("torch", "jax", "jaxlib", "optax", "numpy")}
  print(json.dumps({"ceiling_flops_per_s": ceiling, "ceiling_clean": ceiling_clean, "ceiling_by_lib": ceilings,
                    "cpu_count": os.cpu_count(),
                    "max_other_cores": args.max_other_cores,
                    "flops_convention": "noncausal METHOD.md 6.1 (harness.train_flops_per_token fallback)",
                    "versions": versions}), flush=True)
  return 0


if __name__ == "__main__":
  try:
    sys.exit(main())
  except UserError as e:
    print(f"train_step: error: {e}", file=sys.stderr)
    sys.exit(2)
