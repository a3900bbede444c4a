"""The tidy run table every fit reads: one row per run, or per (run, checkpoint), validated once.

Columns: `params` (N), `tokens` (D), `flops` (C), `loss`; optional `run_id`, `step`, `modality`, `batch_size`,
`lr`, `seed` and mixture weights `mix_<name>`. When exactly one of params/tokens/flops is missing it is derived
through C = 6·N·D and the table says so. N carries a named counting convention and C its FLOP convention
(METHOD.md §6.2): exponents are never comparable across conventions, so every fit records them.
"""
import dataclasses
import pathlib

import numpy as np
import pandas as pd

from mdm_jax.errors import UserError

CORE = ("params", "tokens", "flops", "loss")
OPTIONAL = ("run_id", "step", "modality", "batch_size", "lr", "seed")
PARAM_CONVENTIONS = ("total", "non_embedding", "with_head", "with_attention", "unspecified")
FLOPS_CONVENTIONS = ("6ND", "noncausal", "given", "unspecified")
MIX_PREFIX = "mix_"


@dataclasses.dataclass
class RunTable:
  """A validated run table plus the facts a fit must record about it."""
  df: pd.DataFrame
  params_convention: str = "unspecified"
  flops_convention: str = "unspecified"
  source: str = ""
  notes: list[str] = dataclasses.field(default_factory=list)       # e.g. "tokens derived as flops/(6·params)"
  exclusions: list[dict] = dataclasses.field(default_factory=list)  # every row or run left out, with its reason
  metadata: dict = dataclasses.field(default_factory=dict)          # hyperparameters, schedules (§5.9 pitfall 9)

  def __len__(self):
    return len(self.df)

  def column(self, name: str) -> np.ndarray:
    return self.df[name].to_numpy(np.float64)

  @property
  def mix_columns(self) -> list[str]:
    return [c for c in self.df.columns if c.startswith(MIX_PREFIX)]

  def replace(self, df: pd.DataFrame, **changes) -> "RunTable":
    return dataclasses.replace(self, df=df.reset_index(drop=True), notes=list(self.notes),
                               exclusions=list(self.exclusions), **changes)

  def conventions(self) -> dict:
    return {"params": self.params_convention, "flops": self.flops_convention}

  def provenance(self) -> dict:
    """What a stored fit must say about its input (METHOD.md §5.9, 'Every stored fit records')."""
    out = {"source": self.source, "n_rows": len(self.df), "conventions": self.conventions(), "notes": self.notes,
           "exclusions": self.exclusions, "metadata": self.metadata}
    if "run_id" in self.df:
      out["n_runs"] = int(self.df["run_id"].nunique())
    return out


def from_frame(df: pd.DataFrame, *, params_convention: str = "unspecified", flops_convention: str | None = None,
               source: str = "", columns: dict | None = None, metadata: dict | None = None) -> RunTable:
  """Validate a DataFrame into a RunTable, renaming `columns` {field: column name in df} first."""
  if columns:
    for field, name in columns.items():
      if name not in df.columns:
        raise UserError(name, f"column for {field!r} not found", f"columns are: {', '.join(map(str, df.columns))}")
    df = df.rename(columns={name: field for field, name in columns.items()})
  if params_convention not in PARAM_CONVENTIONS:
    raise UserError("params_convention", f"unknown convention {params_convention!r}",
                    f"use one of {', '.join(PARAM_CONVENTIONS)}")
  df = df.copy()
  notes = []
  missing = [c for c in ("params", "tokens", "flops") if c not in df.columns]
  if "loss" not in df.columns:
    raise UserError("loss", "column missing", "the table needs a loss column (nats per token)")
  if len(missing) > 1:
    raise UserError(missing[0], f"columns {', '.join(missing)} missing",
                    "give at least two of params, tokens, flops (the third follows from C = 6·N·D)")
  for name in [c for c in CORE if c in df.columns] + [c for c in ("batch_size", "lr") if c in df.columns]:
    df[name] = _positive_numeric(df[name], name)
  derived_flops = False
  if missing == ["tokens"]:
    df["tokens"] = df["flops"] / (6.0 * df["params"])
    notes.append("tokens derived as flops / (6·params) (C = 6·N·D)")
  elif missing == ["params"]:
    df["params"] = df["flops"] / (6.0 * df["tokens"])
    notes.append("params derived as flops / (6·tokens) (C = 6·N·D)")
  elif missing == ["flops"]:
    df["flops"] = 6.0 * df["params"] * df["tokens"]
    notes.append("flops derived as 6·params·tokens")
    derived_flops = True
  for name in [c for c in df.columns if c.startswith(MIX_PREFIX)]:
    df[name] = pd.to_numeric(df[name], errors="coerce")
    if df[name].isna().any() or (df[name] < 0).any():
      raise UserError(name, "mixture weights must be numbers >= 0", "fix or drop the bad rows")
  if flops_convention is None:
    flops_convention = "6ND" if derived_flops else "given"
  if flops_convention not in FLOPS_CONVENTIONS:
    raise UserError("flops_convention", f"unknown convention {flops_convention!r}",
                    f"use one of {', '.join(FLOPS_CONVENTIONS)}")
  if len(df) == 0:
    raise UserError("loss", "the table has no rows", "give at least one run")
  return RunTable(df=df.reset_index(drop=True), params_convention=params_convention, flops_convention=flops_convention,
                  source=source, notes=notes, metadata=dict(metadata or {}))


def _positive_numeric(col: pd.Series, name: str) -> pd.Series:
  values = pd.to_numeric(col, errors="coerce")
  bad = values.isna() | ~np.isfinite(values.to_numpy(np.float64, na_value=np.nan))
  if bad.any():
    row = int(np.flatnonzero(bad.to_numpy())[0])
    raise UserError(name, f"{int(bad.sum())} value(s) are NaN, infinite or not numbers (first at row {row}: "
                    f"{col.iloc[row]!r})", "drop or fix those rows")
  nonpos = values <= 0
  if nonpos.any():
    row = int(np.flatnonzero(nonpos.to_numpy())[0])
    raise UserError(name, f"{int(nonpos.sum())} value(s) are <= 0 (first at row {row}: {values.iloc[row]!r})",
                    "every N, D, C, loss, batch and LR must be > 0")
  return values.astype(np.float64)


def load_table(path, *, columns: dict | None = None, params_convention: str = "unspecified",
               flops_convention: str | None = None) -> RunTable:
  """Read a CSV or Parquet table (never pickle) and validate it."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise UserError(str(path), "no such file", "give a CSV or Parquet table, or a run/sweep directory")
  suffix = path.suffix.lower()
  try:
    if suffix in (".parquet", ".pq"):
      df = pd.read_parquet(path)
    elif suffix in (".csv", ".txt", ".tsv"):
      df = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",")
    else:
      raise UserError(str(path), f"unknown table format {suffix!r}", "use .csv, .tsv or .parquet")
  except (ValueError, OSError, pd.errors.ParserError) as e:
    if isinstance(e, UserError):
      raise
    raise UserError(str(path), f"cannot read table: {e}".splitlines()[0], "check the file format") from e
  return from_frame(df, columns=columns, params_convention=params_convention, flops_convention=flops_convention,
                    source=str(path))


def exclude_top_loss(table: RunTable, k: int) -> RunTable:
  """Drop the k highest-loss rows (Chinchilla: keep loss < sorted(loss)[-k]) and record them (§5.9 pitfall 6)."""
  if k <= 0:
    return table
  if k >= len(table):
    raise UserError("exclude_top_loss", f"cannot drop {k} of {len(table)} rows", "use a smaller K")
  loss = table.column("loss")
  cut = np.sort(loss)[-k]
  keep = loss < cut
  dropped = table.df.loc[~keep]
  out = table.replace(table.df.loc[keep])
  out.exclusions.append({"rule": f"exclude_top_loss={k} (keep loss < sorted(loss)[-{k}])",
                         "rows": [int(i) for i in dropped.index], "loss": [float(v) for v in dropped["loss"]]})
  return out


def require_rows(table: RunTable, n_min: int, what: str) -> None:
  if len(table) < n_min:
    raise UserError("loss", f"{what} needs at least {n_min} rows, the table has {len(table)}", "add runs")


def require_columns(table: RunTable, names, what: str) -> None:
  for name in names:
    if name not in table.df.columns:
      raise UserError(name, f"column missing ({what} needs it)", f"add a {name!r} column to the table")
