"""Fit results as dataclasses, and their fit.json form.

Every number is stored unrounded (JSON floats carry 17 significant digits) and derived quantities are computed from
unrounded values before anything is written (§5.9 pitfall 2). Each result records its estimator (objective, δ, sum
or mean, space, optimiser, starts), its input's conventions and exclusions, and a `diagnostics` object.
"""
import dataclasses
import json
import math
import pathlib

import numpy as np

from analysis import allocation
from mdm_jax import runio
from mdm_jax.errors import UserError


@dataclasses.dataclass
class ParametricFit:
  """Approach 3 or VPNLS: L(N, D) = E + A/N^α + B/D^β."""
  method: str
  E: float
  A: float
  B: float
  alpha: float
  beta: float
  objective: float
  estimator: dict
  diagnostics: dict
  input: dict
  a: float = math.nan
  b: float = math.nan
  G: float = math.nan
  bootstrap: dict | None = None
  frontier: list | None = None   # allocation at requested compute budgets

  def __post_init__(self):
    if self.alpha > 0 and self.beta > 0 and self.A > 0 and self.B > 0:
      ex = allocation.exponents(self.params)
      self.a, self.b, self.G = ex["a"], ex["b"], ex["G"]

  @property
  def params(self) -> dict:
    return {"E": self.E, "A": self.A, "B": self.B, "alpha": self.alpha, "beta": self.beta}

  def predict(self, params_n, tokens_n):
    from analysis.objective import loss_surface
    return loss_surface(self.params, params_n, tokens_n)


@dataclasses.dataclass
class PowerLawFit:
  """Approach 1 or 2: N*(C) = k_params·C^a and D*(C) = k_tokens·C^b by OLS in log space."""
  method: str
  a: float
  b: float
  k_params: float
  k_tokens: float
  points: list          # per budget (approach2: the vertices) or per compute point (approach1)
  dropped_budgets: list
  estimator: dict
  diagnostics: dict
  input: dict
  ols: dict = dataclasses.field(default_factory=dict)
  bootstrap: dict | None = None
  frontier: list | None = None

  def allocate(self, flops):
    flops = np.asarray(flops, np.float64)
    return {"params": self.k_params * flops ** self.a, "tokens": self.k_tokens * flops ** self.b}

  @classmethod
  def from_points(cls, method: str, points: list, compute_key: str, **fields) -> "PowerLawFit":
    """OLS power laws of each point's params_opt and tokens_opt on its compute (`compute_key`)."""
    from analysis.powerlaw import fit_power_law
    c = [p[compute_key] for p in points]
    law_n = fit_power_law(c, [p["params_opt"] for p in points], "params")
    law_d = fit_power_law(c, [p["tokens_opt"] for p in points], "tokens")
    return cls(method=method, a=law_n["exponent"], b=law_d["exponent"], k_params=law_n["prefactor"],
               k_tokens=law_d["prefactor"], points=points, ols={"params": law_n, "tokens": law_d}, **fields)


def plain(obj):
  """numpy scalars/arrays -> Python; NaN/inf -> None (strict JSON)."""
  if isinstance(obj, dict):
    return {str(k): plain(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [plain(v) for v in obj]
  if isinstance(obj, np.ndarray):
    return plain(obj.tolist())
  if isinstance(obj, (np.floating, float)):
    v = float(obj)
    return v if math.isfinite(v) else None
  if isinstance(obj, (np.integer,)):
    return int(obj)
  if isinstance(obj, np.bool_):
    return bool(obj)
  return obj


def to_dict(result) -> dict:
  out = plain(dataclasses.asdict(result))
  out["conventions"] = out.get("input", {}).get("conventions", {})
  if isinstance(result, PowerLawFit):
    out["vertices"] = out["points"] if result.method == "approach2" else None
  return out


def write_fit_json(result, out_dir) -> pathlib.Path:
  out_dir = pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  path = out_dir / "fit.json"
  text = json.dumps(to_dict(result) if dataclasses.is_dataclass(result) else plain(result), indent=1,
                    allow_nan=False)
  return runio.write_text_atomic(path, text + "\n")


def read_fit_json(path) -> dict:
  path = pathlib.Path(path)
  try:
    return json.loads(path.read_text())
  except (OSError, json.JSONDecodeError) as e:
    raise UserError(str(path), f"cannot read fit.json ({e})", "re-run `mdm-lab fit`") from e


def check_comparable(first: dict, second: dict) -> None:
  """Exponents are never comparable across counting conventions (§6.2): refuse to compare such fits."""
  c1, c2 = first.get("conventions", {}), second.get("conventions", {})
  for key in ("params", "flops"):
    if c1.get(key) != c2.get(key):
      raise UserError(f"conventions.{key}", f"fits use different conventions ({c1.get(key)} vs {c2.get(key)})",
                      "refit both in one convention before comparing exponents")
