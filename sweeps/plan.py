"""A sweep's plan: every run's resolved config and identity, a printable table, totals and a measured time estimate.

Run identity is `Config.fingerprint()`, a hash of the fully resolved config (stable across processes and hash
seeds), so two spellings of one config are one run and a re-planned sweep finds its finished runs again.
"""
import dataclasses
import hashlib
import json
import time

from mdm_jax import flops
from mdm_jax.config import Config
from sweeps.spec import Spec, _short


@dataclasses.dataclass
class PlannedRun:
  run_id: str
  cfg: Config
  point: dict                   # the grid point as written (axis -> value)
  budget: float | None          # the isoFLOP budget C, if the run has one
  flops: float                  # planned training FLOPs by the trainer's accounting
  group: str                    # runs with equal group keys can be trained as one vmapped program
  shape: str                    # runs with equal shape keys share compiled programs

  @property
  def label(self) -> str:
    return " ".join(f"{k}={_short(v)}" for k, v in self.point.items())


@dataclasses.dataclass
class Plan:
  spec: Spec
  runs: list[PlannedRun]
  duplicates: int               # grid points that resolved to an already planned config

  @property
  def total_flops(self) -> float:
    return sum(r.flops for r in self.runs)

  def counts(self) -> dict:
    return {"runs": len(self.runs), "shapes": len({r.shape for r in self.runs}),
            "groups": len({r.group for r in self.runs}), "duplicates_merged": self.duplicates,
            "budgets": len({r.budget for r in self.runs if r.budget is not None})}


def shape_of(cfg: Config) -> str:
  """What decides a compiled program (mirrors train.shape_key without the mesh); hyper-parameter values don't."""
  d = cfg.to_dict()
  key = {"model": d["model"], "vocab": cfg.vocab_size, "seq": cfg.data.seq_len, "micro": cfg.batch.micro,
         "accumulation": cfg.batch.accumulation, "diffusion": d["diffusion"], "ema": cfg.optim.ema_decay > 0,
         "param": d.get("param"), "mesh": d["mesh"]}
  return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def make_plan(spec: Spec) -> Plan:
  from mdm_jax.group import group_key
  runs, seen, duplicates = [], set(), 0
  for point in spec.points():
    cfg = spec.resolve(point)
    run_id = cfg.fingerprint()
    if run_id in seen:
      duplicates += 1
      continue
    seen.add(run_id)
    planned = flops.run_flops(cfg)["budget"]
    runs.append(PlannedRun(run_id, cfg, point, float(point["flops"]) if "flops" in point else None, planned,
                           group_key(cfg), shape_of(cfg)))
  return Plan(spec, runs, duplicates)


def table(plan: Plan, estimate: dict | None = None) -> str:
  """The plan as a fixed-width text table, then counts, total FLOPs and the estimated wall time."""
  header = ("id", "d_model", "layers", "heads", "params", "non_emb", "steps", "tokens", "FLOPs", "budget",
            "batch", "lr", "seed", "grid point")
  rows = []
  for r in plan.runs:
    c = r.cfg
    counts = flops.param_counts(c.model, c.vocab_size)
    rows.append((r.run_id, c.model.d_model, c.model.n_layers, c.model.n_heads, _si(counts["total"]),
                 _si(counts["non_embedding"]), c.total_steps, _si(c.total_steps * c.tokens_per_step),
                 f"{r.flops:.3g}", f"{r.budget:.3g}" if r.budget else "-",
                 f"{c.batch.logical}/{c.batch.micro}", f"{c.optim.lr:.3g}", c.train.seed, r.label))
  widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
  lines = ["  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip() for row in (header, *rows)]
  counts = plan.counts()
  lines.append("")
  lines.append(f"{counts['runs']} runs, {counts['shapes']} distinct shapes (compiled programs), "
               f"{counts['groups']} vmap groups" + (f", {counts['budgets']} FLOP budgets" if counts["budgets"] else "")
               + (f"; {counts['duplicates_merged']} duplicate grid points merged" if counts["duplicates_merged"]
                  else ""))
  lines.append(f"total training FLOPs: {plan.total_flops:.4g} (trainer accounting, {flops.CONVENTION})")
  if getattr(plan.spec, "n_star_source", None):
    lines.append(f"isoFLOP N* from {plan.spec.n_star_source}")
  if estimate:
    lines.append(f"estimated wall time, in-process sequential on this machine: {_duration(estimate['seconds'])} "
                 f"({estimate['method']})")
  return "\n".join(lines)


def probe(plan: Plan, steps: int = 3, max_shapes: int = 2) -> dict:
  """Estimate the sweep's sequential wall time from a measured probe: time `steps` train steps (after a warm-up
  step) of the cheapest and the most expensive shape in this process; seconds per step are interpolated
  linearly in FLOPs per step for the other shapes, and each distinct shape adds its measured compile time."""
  import jax
  import numpy as np
  from mdm_jax import optim, sharding, step as step_lib
  from mdm_jax.loop import stack_batches
  from mdm_jax.train import compiled_steps, put_global, to_micro
  by_shape = {}
  for r in plan.runs:
    by_shape.setdefault(r.shape, r)
  ordered = sorted(by_shape.values(), key=lambda r: r.flops / r.cfg.total_steps)
  chosen = [ordered[0]] + ([ordered[-1]] if len(ordered) > 1 and max_shapes > 1 else [])
  measured = []   # (flops per step, seconds per step, compile seconds)
  for r in chosen:
    cfg = r.cfg
    mesh = sharding.make_mesh(cfg.mesh)
    t0 = time.perf_counter()
    fns = compiled_steps(cfg, mesh)
    state = fns.init(step_lib.seed_key(0), optim.hyper_arrays(optim.hyperparams(cfg)))
    shape, slots = (cfg.batch.logical, cfg.data.seq_len), cfg.train.steps_per_call
    one = to_micro({"tokens": np.zeros(shape, np.int32), "loss_mask": np.ones(shape, bool),
                    "modality": np.zeros(shape, np.int8)}, cfg)
    batches = put_global(stack_batches([one] * slots, slots), fns.chunk_batch_sharding)   # the trainer's program
    state, metrics = fns.train_chunk(state, batches, np.int32(1))
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - t0
    t0, timed = time.perf_counter(), min(steps, slots)
    state, metrics = fns.train_chunk(state, batches, np.int32(timed))   # in one call, as the trainer runs them
    jax.block_until_ready(metrics)
    measured.append((r.flops / cfg.total_steps, (time.perf_counter() - t0) / timed, compile_s))
  (f0, s0, _), (f1, s1, _) = measured[0], measured[-1]
  slope = (s1 - s0) / (f1 - f0) if f1 > f0 else s0 / f0
  per_step = lambda f: max(s0 + slope * (f - f0), 1e-6) if f1 > f0 else s0 * f / f0
  compile_s = float(np.mean([m[2] for m in measured]))
  seconds = sum(r.cfg.total_steps * per_step(r.flops / r.cfg.total_steps) for r in plan.runs)
  seconds += compile_s * len(by_shape)
  return {"seconds": seconds, "probe": [{"flops_per_step": f, "seconds_per_step": s, "compile_seconds": c}
                                        for f, s, c in measured],
          "method": f"probe: {steps} steps of {len(measured)} shape(s) timed in this process, eval and "
                    f"checkpoint time not included"}


def _si(n: float) -> str:
  for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
    if abs(n) >= scale:
      return f"{n / scale:.3g}{unit}"
  return str(int(n))


def _duration(s: float) -> str:
  if s < 120:
    return f"{s:.0f} s"
  if s < 7200:
    return f"{s / 60:.1f} min"
  return f"{s / 3600:.1f} h"

