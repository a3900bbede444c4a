"""Separate scaling laws per modality (METHOD.md §5.6): the same estimator on each modality's rows.

Per-modality losses come from `eval/loss/<modality>` (rundirs.load_run_dirs(modalities=True)) or a `modality`
column. Each law carries its own diagnostics, conventions and row count; exponents are compared only within one
counting convention (§6.2).
"""
from analysis import table as table_lib
from mdm_jax.errors import UserError


def fit_per_modality(data, method: str = "approach3", **fit_kw) -> dict:
  """{modality: fit} with `method` in approach1|approach2|approach3|vpnls."""
  from analysis.parametric import as_table
  from analysis.pipeline import FITTERS
  table = as_table(data)
  table_lib.require_columns(table, ("modality",), "per-modality laws")
  if method not in FITTERS:
    raise UserError("method", f"unknown method {method!r}", f"use one of {', '.join(FITTERS)}")
  out = {}
  for modality, rows in table.df.groupby("modality", sort=True):
    sub = table.replace(rows.drop(columns="modality"))
    sub.notes.append(f"modality = {modality}")
    out[str(modality)] = FITTERS[method](sub, **fit_kw)
  return out
