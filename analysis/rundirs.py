"""Load the lab's own run directories (run.json + metrics.jsonl, COMMON.md format) into a RunTable.

Only the documented file format is read, so `analysis` stays independent of the trainer. A path may be one run
directory, a sweep directory (SWEEP/runs/<run_id>/), or any directory whose sub-directories are runs. Runs that are
not `done`, or lack the requested loss, are left out and listed in `exclusions`, never dropped silently.
"""
import json
import math
import pathlib

import pandas as pd

from analysis import table as table_lib
from mdm_jax.errors import UserError

RUN_JSON, METRICS = "run.json", "metrics.jsonl"
# Where the trainer's resolved config keeps the per-run hyperparameters we tabulate (dotted paths).
CONFIG_FIELDS = {"batch_size": "batch.logical", "lr": "optim.lr", "seed": "train.seed"}
# Settings that change exponents (§5.9 pitfall 9): every leaf of these config sections, plus any setting whose path
# names the SDE/κ rule, a base value or the parameterisation, is recorded per fit. Settings that should be shared
# by all runs of one fit (schedule shape, objective, sequence length, parameterisation) are warned about when they
# differ; those rescaled per run by design (lr, β, ε, WD under κ) are only recorded.
HYPER_SECTIONS = ("optim.", "diffusion.", "data.seq_len")
HYPER_MARKERS = ("kappa", "sde", "gamma", "base", "param")
SHARED = ("optim.lr_schedule", "optim.warmup", "optim.decay_fraction", "optim.min_lr_ratio", "diffusion.",
          "data.seq_len", "param")
SWEPT = ("optim.lr", "batch.logical", "batch.physical", "train.seed", "data.mixture")
MIXTURE_FIELD, MODALITIES = "data.mixture", ("text", "image", "audio")


def find_run_dirs(path) -> list[pathlib.Path]:
  path = pathlib.Path(path)
  if (path / RUN_JSON).is_file():
    return [path]
  base = path / "runs" if (path / "runs").is_dir() else path
  runs = sorted(p for p in base.iterdir() if (p / RUN_JSON).is_file()) if base.is_dir() else []
  if not runs:
    raise UserError(str(path), "no run directories found (no run.json)", "give a run dir or a sweep dir")
  return runs


def read_metrics(path) -> list[dict]:
  """metrics.jsonl lines; a torn last line (a crash mid-append) is skipped, a bad middle line is an error."""
  path = pathlib.Path(path)
  if not path.is_file():
    return []
  lines = path.read_text().splitlines()
  out = []
  for i, line in enumerate(lines):
    if not line.strip():
      continue
    try:
      out.append(json.loads(line))
    except json.JSONDecodeError as e:
      if i == len(lines) - 1:
        break
      raise UserError(f"{path}:{i + 1}", f"not valid JSON ({e.msg})", "repair or remove that line") from e
  return out


def _get(config: dict, dotted: str):
  node = config
  for key in dotted.split("."):
    if not isinstance(node, dict) or key not in node:
      return None
    node = node[key]
  return node


def load_run_dirs(path, *, convention: str = "total", loss_key: str = "eval/loss", per_step: bool = False,
                  flops: str = "logged", modalities: bool = False, statuses=("done",)) -> table_lib.RunTable:
  """One row per run (final metrics), or per logged step carrying `loss_key` when per_step=True.

  convention: which of run.json's params counts is N (total, non_embedding, with_head, with_attention).
  flops: "logged" uses the trainer's cumulative FLOPs (non-causal convention, §6.1); "6ND" recomputes 6·N·D.
  modalities: also emit one row per `<loss_key>/<modality>` key, with a `modality` column.
  """
  if convention not in table_lib.PARAM_CONVENTIONS[:-1]:
    raise UserError("convention", f"unknown counting convention {convention!r}",
                    f"use one of {', '.join(table_lib.PARAM_CONVENTIONS[:-1])}")
  if flops not in ("logged", "6ND"):
    raise UserError("flops", f"unknown FLOP source {flops!r}", "use 'logged' or '6ND'")
  rows, exclusions, hyper = [], [], {}
  flops_conventions = set()
  for run_dir in find_run_dirs(path):
    run = _read_run_json(run_dir / RUN_JSON)
    run_id = str(run.get("run_id") or run_dir.name)
    status = run.get("status")
    if status not in statuses:
      exclusions.append({"run_id": run_id, "reason": f"status {status!r}" +
                         (f" at step {run['diverged_at']}" if run.get("diverged_at") is not None else "")})
      continue
    counts = run.get("params") or {}
    if not isinstance(counts.get(convention), (int, float)):
      raise UserError(f"{run_dir / RUN_JSON}: params.{convention}", "missing", "the trainer writes all conventions")
    n_params = float(counts[convention])
    config = run.get("config") or {}
    base = {"run_id": run_id, "params": n_params}
    base.update({f"params_{k}": float(v) for k, v in counts.items() if isinstance(v, (int, float))})
    base.update({col: _get(config, dotted) for col, dotted in CONFIG_FIELDS.items()})
    mixture = _get(config, MIXTURE_FIELD)
    if isinstance(mixture, (list, tuple)) and len(mixture) == len(MODALITIES):
      base.update({f"{table_lib.MIX_PREFIX}{m}": float(w) for m, w in zip(MODALITIES, mixture)})
    for field, value in _leaves(config):
      if field not in SWEPT and (field.startswith(HYPER_SECTIONS) or any(m in field for m in HYPER_MARKERS)):
        hyper.setdefault(field, set()).add(json.dumps(value, sort_keys=True))
    flops_conventions.add((run.get("flops") or {}).get("convention", "unspecified"))
    lines = read_metrics(run_dir / METRICS) if per_step else [run.get("final") or {}]
    if not per_step and loss_key not in lines[0]:  # the final line may be a train-only line: use the last eval
      lines = [m for m in read_metrics(run_dir / METRICS) if loss_key in m][-1:] or lines
    got = 0
    for metrics in lines:
      for modality, key in _loss_keys(metrics, loss_key, modalities):
        value = metrics.get(key)
        if not isinstance(value, (int, float)) or not math.isfinite(value):
          continue
        tokens = metrics.get("tokens") or run.get("tokens_planned")
        row = dict(base, step=metrics.get("step"), tokens=tokens, loss=float(value), modality=modality)
        row["flops"] = metrics.get("flops") if flops == "logged" else None
        rows.append(row)
        got += 1
    if got == 0:
      exclusions.append({"run_id": run_id, "reason": f"no finite {loss_key!r} in its metrics"})
  if not rows:
    raise UserError(str(path), f"no usable runs ({len(exclusions)} excluded: "
                    f"{'; '.join(e['reason'] for e in exclusions[:3])})", "check statuses and loss_key")
  df = pd.DataFrame(rows)
  if not modalities:
    df = df.drop(columns="modality")
  if flops == "6ND" or df["flops"].isna().any():
    df = df.drop(columns="flops")  # from_frame derives it as 6·N·D and notes that
  for col in ("batch_size", "lr", "seed", "step"):
    if col in df and df[col].isna().all():
      df = df.drop(columns=col)
  flops_convention = "6ND" if "flops" not in df else _one(flops_conventions)
  # One value per setting, or the sorted list of distinct values when runs disagree (then also `mixed_settings`).
  values = {k: [json.loads(v) for v in sorted(vals)] for k, vals in hyper.items()}
  metadata = {"hyperparameters": {k: v[0] if len(v) == 1 else v for k, v in values.items()},
              "mixed_settings": sorted(k for k, v in values.items()
                                       if len(v) > 1 and (k.startswith(SHARED) or "param" in k)),
              "loss_key": loss_key, "per_step": per_step}
  out = table_lib.from_frame(df, params_convention=convention, flops_convention=flops_convention, source=str(path),
                             metadata=metadata)
  out.exclusions.extend(exclusions)
  return out


def _leaves(node, prefix=""):
  """(dotted path, value) for every non-dict leaf of a nested config."""
  if isinstance(node, dict):
    for key, value in node.items():
      yield from _leaves(value, f"{prefix}{key}.")
  else:
    yield prefix[:-1], node


def _loss_keys(metrics: dict, loss_key: str, modalities: bool):
  if not modalities:
    return [(None, loss_key)]
  prefix = loss_key + "/"
  return [(key[len(prefix):], key) for key in sorted(metrics) if key.startswith(prefix)]


def _one(values: set) -> str:
  values = values - {"unspecified"}
  if len(values) > 1:
    raise UserError("flops.convention", f"runs mix FLOP conventions {sorted(values)}", "fit one convention at a time")
  value = next(iter(values), "unspecified")
  return value if value in table_lib.FLOPS_CONVENTIONS else "given"


def _read_run_json(path: pathlib.Path) -> dict:
  try:
    run = json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise UserError(str(path), f"not valid JSON ({e.msg})", "the run directory is corrupt") from e
  if not isinstance(run, dict):
    raise UserError(str(path), "must hold a JSON object", "the run directory is corrupt")
  return run
