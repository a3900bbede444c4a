"""Sweep specs: a YAML file of a base config and a grid, validated and expanded into fully resolved run configs.

  name: lr-by-size                # optional
  base: tiny                      # bundled config name or path (relative to the spec), plus dotted overrides:
  set: {train.steps: 200, batch.logical: 8}
  sizes: {aspect: 32, head_dim: 64, ffn_mult: 4}      # optional size family (see sweeps.sizes)
  grid:                           # a node; a list of nodes is their union
    product:
      - {size: [xs, s], seed: [0, 1]}                 # a mapping of axes is their product
      - {zip: {lr: [1e-3, 3e-3], optim.warmup: [0.1, 0.05]}}
      - {when: {size: s}, grid: {schedule: [cosine, wsd]}}   # a sub-grid only where the condition holds
  isoflop: {budgets: [1e12, 3e12], sizes: 5, spread: 4, n_star: {fit: fit.json}}   # optional; × grid
  resources: {cpus_per_run: 1, processes_per_run: 1}
  retries: 1

Axes are any dotted config field or a first-class axis: size, tokens (D), flops (C), steps, mixture
(3 weights or {simplex: n}), batch / physical_batch, lr, schedule, seed. Value lists may be generated with
{log: [lo, hi, n]} or {linear: [lo, hi, n]}. Tokens and FLOP budgets become whole steps after every other axis
is applied (they depend on batch, sequence length and size). Every error names the offending field.
"""
import pathlib

import numpy as np

from mdm_jax.config import CONFIG_DIR, Config, _merge, _nest, from_dict
from mdm_jax.errors import ConfigError, UserError, parse_yaml
from sweeps import sizes as sizes_lib

TOP_FIELDS = ("name", "base", "set", "sizes", "grid", "isoflop", "resources", "retries")
ALIASES = {"lr": "optim.lr", "schedule": "optim.lr_schedule", "seed": "train.seed", "batch": "batch.logical",
           "physical_batch": "batch.physical", "steps": "train.steps", "mixture": "data.mixture"}
DERIVED = ("size", "tokens", "flops")    # axes resolved specially (not a single config field)
OPERATORS = ("product", "zip", "union", "when", "grid", "isoflop")
ISOFLOP_FIELDS = ("budgets", "sizes", "spread", "n_star", "params")


class Spec:
  """A parsed, validated sweep spec. `points()` lists every grid point; `resolve(point)` gives its Config."""

  def __init__(self, data: dict, base_dir: pathlib.Path, text: str = ""):
    if not isinstance(data, dict):
      raise UserError("spec", "must be a YAML mapping", f"fields: {', '.join(TOP_FIELDS)}")
    for key in data:
      if key not in TOP_FIELDS:
        raise UserError(f"spec.{key}", "unknown field", f"valid fields: {', '.join(TOP_FIELDS)}")
    self.data, self.base_dir, self.text = data, base_dir, text
    self.name = str(data.get("name") or "sweep")
    self.family = sizes_lib.family_from_spec(data.get("sizes"))
    self.base_dict = self._base()
    self.base = _build(self.base_dict, "spec.set")
    self.resources = _resources(data.get("resources"))
    retries = data.get("retries", 1)
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
      raise UserError("spec.retries", f"must be an integer >= 0, got {retries!r}")
    self.retries = retries
    if "grid" not in data and "isoflop" not in data:
      raise UserError("spec.grid", "missing", "give a grid (or an isoflop design)")

  def _base(self) -> dict:
    base = self.data.get("base")
    out: dict = {}
    if base is not None:
      if not isinstance(base, str):
        raise UserError("spec.base", f"must be a config name or path, got {base!r}")
      path = self.base_dir / base
      if not path.is_file():
        path = CONFIG_DIR / f"{base}.yaml"
      if not path.is_file():
        raise UserError("spec.base", f"config {base!r} not found",
                        f"a path relative to the spec, or one of {', '.join(p.stem for p in CONFIG_DIR.glob('*.yaml'))}")
      out = parse_yaml(path.read_bytes(), "spec.base", f"fix the syntax of {path}") or {}
    overrides = self.data.get("set") or {}
    if not isinstance(overrides, dict):
      raise UserError("spec.set", "must be a mapping of dotted config fields", "e.g. {train.steps: 200}")
    return _merge(out, _nest({str(k): v for k, v in overrides.items()}))

  # --- grid expansion -------------------------------------------------------------------------------------------

  def points(self) -> list[dict]:
    """Every grid point as an ordered {axis: value} mapping (values as written, generators expanded)."""
    iso = self._isoflop(self.data["isoflop"], "isoflop") if "isoflop" in self.data else [{}]
    grid = self.data.get("grid")
    return [q for p in iso for q in (self._expand(grid, p, "grid") if grid is not None else [p])]

  def _expand(self, node, point: dict, where: str) -> list[dict]:
    if isinstance(node, list):
      if not node:
        raise UserError(where, "empty list of grids")
      return [p for i, n in enumerate(node) for p in self._expand(n, point, f"{where}[{i}]")]
    if not isinstance(node, dict) or not node:
      raise UserError(where, f"expected a mapping of axes or an operator, got {node!r}")
    ops = [k for k in node if k in OPERATORS]
    if "when" in node or "grid" in node:
      return self._when(node, point, where)
    if "isoflop" in node:
      _only(node, "isoflop", where)
      return [{**point, **p} for p in self._isoflop(node["isoflop"], f"{where}.isoflop")]
    if "product" in node:
      _only(node, "product", where)
      return self._product(node["product"], point, f"{where}.product")
    if "zip" in node:
      _only(node, "zip", where)
      return self._zip(node["zip"], point, f"{where}.zip")
    if "union" in node:
      _only(node, "union", where)
      if not isinstance(node["union"], list):
        raise UserError(f"{where}.union", "must be a list of grids")
      return self._expand(node["union"], point, f"{where}.union")
    assert not ops
    return self._product(node, point, where)

  def _product(self, factors, point: dict, where: str) -> list[dict]:
    if isinstance(factors, dict):
      factors = [{axis: values} for axis, values in factors.items()]
    if not isinstance(factors, list) or not factors:
      raise UserError(where, "a product needs a non-empty list of grids or a mapping of axes")
    partial = [point]
    for i, factor in enumerate(factors):
      if isinstance(factor, dict) and len(factor) == 1 and next(iter(factor)) not in OPERATORS:
        axis, values = next(iter(factor.items()))
        values = self._axis_values(axis, values, f"{where}.{axis}")
        partial = [{**p, axis: v} for p in partial for v in values]
      else:
        partial = [q for p in partial for q in self._expand(factor, p, f"{where}[{i}]")]
    return partial

  def _zip(self, axes, point: dict, where: str) -> list[dict]:
    if not isinstance(axes, dict) or not axes:
      raise UserError(where, "a zip needs a mapping of axes to equally long lists")
    columns = {axis: self._axis_values(axis, v, f"{where}.{axis}") for axis, v in axes.items()}
    lengths = {len(v) for v in columns.values()}
    if len(lengths) != 1:
      raise UserError(where, f"zipped axes have different lengths {sorted(lengths)}", "give equally long lists")
    return [{**point, **dict(zip(columns, row))} for row in zip(*columns.values())]

  def _when(self, node, point: dict, where: str) -> list[dict]:
    if set(node) != {"when", "grid"} or not isinstance(node["when"], dict) or not node["when"]:
      raise UserError(where, "a conditional sub-grid is {when: {axis: value(s)}, grid: ...}", "")
    for axis, wanted in node["when"].items():
      self._check_axis(axis, f"{where}.when.{axis}")
      wanted = wanted if isinstance(wanted, list) else [wanted]
      if self._value_of(axis, point) not in wanted:
        return [point]   # condition false: the point passes through unchanged
    return self._expand(node["grid"], point, f"{where}.grid")

  def _value_of(self, axis: str, point: dict):
    """The point's value of an axis, else the base config's (derived axes have none)."""
    if axis in point or axis in DERIVED:
      return point.get(axis)
    value = _get_attr(self.base, ALIASES.get(axis, axis))
    return list(value) if isinstance(value, tuple) else value

  def _check_axis(self, axis: str, where: str):
    if axis in DERIVED or axis in ALIASES:
      return
    if "." not in axis:
      raise UserError(where, "unknown axis", f"use a dotted config field or one of "
                      f"{', '.join(sorted((*DERIVED, *ALIASES)))}")
    try:
      value = _get_attr(self.base, axis)
    except AttributeError:
      value = None
    if value is None or hasattr(value, "__dataclass_fields__"):
      raise UserError(where, "unknown config field", "check the dotted name against the config")

  def _axis_values(self, axis: str, values, where: str) -> list:
    self._check_axis(axis, where)
    if isinstance(values, dict):
      values = _generate(values, axis, where)
    if not isinstance(values, list):
      raise UserError(where, f"an axis takes a list of values, got {values!r}", f"e.g. {axis}: [a, b]")
    if not values:
      raise UserError(where, "empty axis", "give at least one value")
    if axis == "mixture" or axis == "data.mixture":
      for i, v in enumerate(values):
        _check_mixture(v, f"{where}[{i}]")
    if axis in ("tokens", "flops"):
      values = [sizes_lib.positive_number(v, f"{where}[{i}]", "a budget") for i, v in enumerate(values)]
    return values

  def _isoflop(self, spec, where: str) -> list[dict]:
    if not isinstance(spec, dict):
      raise UserError(where, "must be a mapping", f"fields: {', '.join(ISOFLOP_FIELDS)}")
    for key in spec:
      if key not in ISOFLOP_FIELDS:
        raise UserError(f"{where}.{key}", "unknown field", f"valid fields: {', '.join(ISOFLOP_FIELDS)}")
    budgets = spec.get("budgets")
    if not isinstance(budgets, list) or not budgets:
      raise UserError(f"{where}.budgets", "needs a non-empty list of FLOP budgets", "e.g. [1e13, 3e13]")
    budgets = [sizes_lib.positive_number(c, f"{where}.budgets[{i}]", "a budget") for i, c in enumerate(budgets)]
    k, spread = spec.get("sizes", 5), spec.get("spread", 4.0)
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
      raise UserError(f"{where}.sizes", f"must be an integer >= 1, got {k!r}")
    spread = sizes_lib.positive_number(spread, f"{where}.spread", "spread")
    if spread < 1:
      raise UserError(f"{where}.spread", f"must be a number >= 1 (N from N*/spread to N*·spread), got {spread!r}")
    convention = spec.get("params", "non_embedding")
    if convention not in sizes_lib.PARAM_CONVENTIONS:
      raise UserError(f"{where}.params", f"unknown convention {convention!r}",
                      f"use one of {', '.join(sizes_lib.PARAM_CONVENTIONS)}")
    guesses, self.n_star_source = sizes_lib.n_star_guess(spec.get("n_star"), budgets, f"{where}.n_star",
                                                         self.base_dir)
    out = []
    for c, n_star in zip(budgets, guesses):
      for fields in sizes_lib.isoflop_sizes(self.family, self.base, n_star, k, float(spread), convention):
        out.append({"size": {"width": fields["d_model"], "depth": fields["n_layers"]}, "flops": c})
    return out

  # --- resolution -----------------------------------------------------------------------------------------------

  def resolve(self, point: dict) -> Config:
    """The fully resolved Config of one grid point."""
    where = "grid point " + ", ".join(f"{k}={_short(v)}" for k, v in point.items())
    dotted = {}
    for axis, value in point.items():
      if axis == "size":
        _, fields = self.family.resolve(value, f"{where}: size")
        dotted.update({f"model.{k}": v for k, v in fields.items()})
      elif axis not in ("tokens", "flops"):
        dotted[ALIASES.get(axis, axis)] = value
    if "tokens" in point or "flops" in point:
      dotted["train.tokens"] = 0
    cfg = _build(_merge(self.base_dict, _nest(dotted)), where)
    if "flops" in point:
      steps = sizes_lib.steps_for_flops(cfg, float(point["flops"]), f"{where}: flops")
      cfg = cfg.replace(**{"train.steps": steps})
    elif "tokens" in point:
      cfg = cfg.replace(**{"train.steps": sizes_lib.steps_for_tokens(cfg, float(point["tokens"]), where)})
    return cfg


def load_spec(path) -> Spec:
  path = pathlib.Path(path)
  if not path.is_file():
    raise UserError(str(path), "sweep spec not found", "give the path of a YAML sweep spec")
  raw = path.read_bytes()
  return Spec(parse_yaml(raw, str(path)), path.parent, raw.decode("utf-8", errors="replace"))


def _resources(spec) -> dict:
  out = {"cpus_per_run": 1.0, "processes_per_run": 1}
  spec = spec or {}
  if not isinstance(spec, dict):
    raise UserError("spec.resources", "must be a mapping", "e.g. {cpus_per_run: 1}")
  for key, value in spec.items():
    if key not in out:
      raise UserError(f"spec.resources.{key}", "unknown field", f"valid fields: {', '.join(out)}")
    if not sizes_lib._positive(value) or (key == "processes_per_run" and not isinstance(value, int)):
      raise UserError(f"spec.resources.{key}", f"must be a positive number, got {value!r}")
    out[key] = value
  return out


def _generate(spec: dict, axis: str, where: str) -> list:
  if len(spec) != 1:
    raise UserError(where, f"a value generator is one of {{log: [lo, hi, n]}}, {{linear: [lo, hi, n]}}, "
                    f"{{simplex: n}}; got {spec!r}")
  kind, arg = next(iter(spec.items()))
  if kind == "simplex":
    if not isinstance(arg, int) or isinstance(arg, bool) or arg < 1:
      raise UserError(f"{where}.simplex", f"must be an integer >= 1 (grid spacing 1/n), got {arg!r}")
    return [[i / arg, j / arg, (arg - i - j) / arg] for i in range(arg + 1) for j in range(arg + 1 - i)]
  if kind in ("log", "linear"):
    if not (isinstance(arg, list) and len(arg) == 3 and all(sizes_lib._positive(a) for a in arg)
            and isinstance(arg[2], int) and arg[0] <= arg[1]):
      raise UserError(f"{where}.{kind}", f"must be [lo, hi, n] with 0 < lo <= hi and integer n >= 1, got {arg!r}")
    lo, hi, n = arg
    values = np.geomspace(lo, hi, n) if kind == "log" else np.linspace(lo, hi, n)
    return [round(float(v), 12) for v in values]
  raise UserError(where, f"unknown value generator {kind!r}", "use log, linear or simplex")


def _check_mixture(value, where: str):
  if not (isinstance(value, list) and len(value) == 3 and all(isinstance(w, (int, float)) for w in value)):
    raise UserError(where, f"a mixture is 3 weights (text, image, audio), got {value!r}", "e.g. [0.5, 0.25, 0.25]")
  if any(w < 0 for w in value):
    raise UserError(where, f"mixture weights must be >= 0, got {value}")
  if abs(sum(value) - 1) > 1e-6:
    raise UserError(where, f"mixture weights must sum to 1, got {value} (sum {sum(value):.6g})",
                    "normalise the weights")


def _build(data: dict, where: str) -> Config:
  try:
    return from_dict(data)
  except ConfigError as e:
    raise UserError(f"{where}: {e.field}", e.problem, e.fix) from None


def _get_attr(cfg, dotted: str):
  node = cfg
  for key in dotted.split("."):
    node = getattr(node, key)
  return node


def _only(node: dict, op: str, where: str):
  if len(node) != 1:
    raise UserError(f"{where}.{op}", f"an operator stands alone in its mapping, found also "
                    f"{sorted(k for k in node if k != op)}", "wrap the other axes in a product")


def _short(v) -> str:
  if isinstance(v, dict) and "width" in v:
    return v.get("label") or f"w{v['width']}" + (f"l{v['depth']}" if "depth" in v else "")
  if isinstance(v, float):
    return f"{v:.4g}"
  if isinstance(v, list) and all(isinstance(x, float) for x in v):
    return "[" + ",".join(f"{x:.3g}" for x in v) + "]"
  return str(v)

