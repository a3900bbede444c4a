"""Model sizes for sweeps and the isoFLOP design.

A size is a named size, a width (depth from a fixed aspect ratio), or explicit width/depth. Every size becomes a
valid ModelConfig: heads = width / head_dim (at least 1, always dividing the width with an even head dim) and
d_ff = ffn_mult · width. The isoFLOP design places k sizes on a log grid around a guess of N*(C) and derives each
run's steps from C with the trainer's own FLOP accounting (`mdm_jax.flops`, not 6ND), snapped to whole steps.
"""
import dataclasses
import math
import pathlib

from mdm_jax import flops
from mdm_jax.config import Config, ModelConfig
from mdm_jax.errors import ConfigError, UserError

# (width, depth): aspect ratios 32-64, the range where loss is flat in shape (Kaplan et al. 2020, Fig. 5)
NAMED_SIZES = {"xxs": (32, 1), "xs": (64, 2), "s": (128, 2), "m": (256, 4), "l": (512, 8), "xl": (768, 12),
               "xxl": (1024, 16)}
PARAM_CONVENTIONS = ("total", "non_embedding", "with_head")
BUDGET_TOLERANCE = 0.01   # a run's planned FLOPs stay within 1 % of its budget


@dataclasses.dataclass(frozen=True)
class SizeFamily:
  aspect: float = 32.0        # width / depth of sizes given by width alone
  head_dim: int = 64          # heads = width / head_dim
  ffn_mult: float = 4.0       # d_ff = ffn_mult · width
  width_step: int = 16        # isoFLOP widths are multiples of this
  named: tuple = tuple(NAMED_SIZES.items())

  def heads(self, width: int) -> int:
    """The most heads <= width/head_dim that divide the width with an even head dim (RoPE)."""
    for h in range(max(1, width // self.head_dim), 0, -1):
      if width % h == 0 and (width // h) % 2 == 0:
        return h
    return 1

  def depth(self, width: int) -> int:
    return max(1, round(width / self.aspect))

  def model_fields(self, width: int, depth: int | None = None) -> dict:
    depth = self.depth(width) if depth is None else depth
    return {"d_model": width, "n_layers": depth, "n_heads": self.heads(width),
            "d_ff": int(round(self.ffn_mult * width))}

  def resolve(self, value, field: str) -> tuple[str, dict]:
    """A size as written in a spec -> (label, {model field: value}); bad sizes raise UserError naming `field`."""
    named = dict(self.named)
    if isinstance(value, str):
      if value not in named:
        raise UserError(field, f"unknown size {value!r}", f"use one of {', '.join(named)} or a width")
      width, depth = named[value]
      label, fields = value, self.model_fields(width, depth)
    elif isinstance(value, int) and not isinstance(value, bool):
      label, fields = f"w{value}", self.model_fields(value)
    elif isinstance(value, dict):
      unknown = set(value) - {"width", "depth", "heads", "d_ff", "label"}
      if unknown or "width" not in value:
        raise UserError(field, f"a size mapping needs width (and optionally depth, heads, d_ff, label), got "
                        f"{sorted(value)}", "e.g. {width: 256, depth: 4}")
      fields = self.model_fields(value["width"], value.get("depth"))
      fields.update({k2: value[k1] for k1, k2 in (("heads", "n_heads"), ("d_ff", "d_ff")) if k1 in value})
      label = value.get("label") or f"w{fields['d_model']}l{fields['n_layers']}"
    else:
      raise UserError(field, f"a size is a name, a width or a mapping, got {value!r}", "e.g. s, 256, {width: 256}")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in fields.values()):
      raise UserError(field, f"size {value!r} must give positive integer dimensions, got {fields}")
    try:
      ModelConfig(**fields)
    except ConfigError as e:
      raise UserError(field, f"size {value!r} is not a valid model: {e}", "change width/heads") from None
    return label, fields


def family_from_spec(spec: dict | None, field: str = "sizes") -> SizeFamily:
  spec = dict(spec or {})
  allowed = {"aspect", "head_dim", "ffn_mult", "width_step", "named"}
  for key in spec:
    if key not in allowed:
      raise UserError(f"{field}.{key}", "unknown field", f"valid fields: {', '.join(sorted(allowed))}")
  named = dict(NAMED_SIZES)
  for name, wd in (spec.pop("named", None) or {}).items():
    if not (isinstance(wd, (list, tuple)) and len(wd) == 2 and all(isinstance(x, int) and x > 0 for x in wd)):
      raise UserError(f"{field}.named.{name}", f"must be [width, depth], got {wd!r}")
    named[str(name)] = tuple(wd)
  for key, value in spec.items():
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
      raise UserError(f"{field}.{key}", f"must be a positive number, got {value!r}")
  ints = {k: int(v) for k, v in spec.items() if k in ("head_dim", "width_step")}
  return SizeFamily(**{**spec, **ints, "named": tuple(named.items())})


def param_count(cfg: Config, convention: str) -> int:
  return flops.param_counts(cfg.model, cfg.vocab_size)[convention]


def steps_for_flops(cfg: Config, budget: float, field: str) -> int:
  """Whole optimizer steps whose training FLOPs (trainer accounting) are closest to `budget`; within 1 % or error."""
  per_step = flops.train_flops_per_token(cfg) * cfg.tokens_per_step
  steps = round(budget / per_step)
  if steps < 1 or abs(steps * per_step - budget) > BUDGET_TOLERANCE * budget:
    raise UserError(field, f"budget {budget:.3g} FLOPs gives {budget / per_step:.2f} steps of "
                    f"{per_step:.3g} FLOPs for d_model={cfg.model.d_model}, n_layers={cfg.model.n_layers}: whole "
                    f"steps cannot stay within {BUDGET_TOLERANCE:.0%}", "raise the budget or lower batch.logical")
  return steps


def steps_for_tokens(cfg: Config, tokens: float, field: str) -> int:
  steps = round(tokens / cfg.tokens_per_step)
  if steps < 1:
    raise UserError(field, f"{tokens:.3g} tokens is less than one step of {cfg.tokens_per_step} tokens",
                    "raise the token budget or lower batch.logical / data.seq_len")
  return steps


def n_star_guess(spec, budgets: list[float], field: str, base_dir: pathlib.Path) -> tuple[list[float], str]:
  """N*(C) for each budget, and a description of where it came from.

  spec: None (Chinchilla's D = 20·N under C = 6·N·D, i.e. N* = sqrt(C/120)); a list parallel to budgets;
  {coefficient, exponent} for N* = coefficient·C^exponent; or {fit: path/to/fit.json} from `mdm-lab fit`.
  """
  if spec is None:
    return [math.sqrt(c / 120.0) for c in budgets], "guess: Chinchilla D=20N, N*=sqrt(C/120)"
  if isinstance(spec, list):
    if len(spec) != len(budgets):
      raise UserError(field, f"needs {len(budgets)} values (one per budget), got {len(spec)}")
    return [positive_number(v, f"{field}[{i}]", "N*") for i, v in enumerate(spec)], "given per budget"
  if isinstance(spec, dict) and set(spec) == {"coefficient", "exponent"}:
    k = positive_number(spec["coefficient"], f"{field}.coefficient", "coefficient")
    a = positive_number(spec["exponent"], f"{field}.exponent", "exponent")
    return [k * c ** a for c in budgets], f"N*={k:.4g}*C^{a:.4g}"
  if isinstance(spec, dict) and set(spec) == {"fit"}:
    return _from_fit(base_dir / spec["fit"], budgets, f"{field}.fit")
  raise UserError(field, f"unrecognised N* guess {spec!r}",
                  "give a list per budget, {coefficient: k, exponent: a}, or {fit: fit.json}")


def _from_fit(path: pathlib.Path, budgets: list[float], field: str) -> tuple[list[float], str]:
  import json
  try:
    fit = json.loads(path.read_text())
  except (OSError, ValueError) as e:   # ValueError: not JSON, or not UTF-8
    raise UserError(field, f"cannot read {path} ({e})", "give the fit.json written by `mdm-lab fit`") from None
  if not isinstance(fit, dict):
    raise UserError(field, f"{path} holds a JSON {type(fit).__name__}, not a fit", "give the fit.json written by "
                    "`mdm-lab fit`")
  if _positive(fit.get("k_params")) and isinstance(fit.get("a"), (int, float)):   # Approach 1/2: N* = k·C^a
    return [fit["k_params"] * c ** fit["a"] for c in budgets], f"{path.name}: N*=k_params*C^a"
  if _positive(fit.get("G")) and isinstance(fit.get("a"), (int, float)):   # parametric: N* = G·(C/6)^a
    return [fit["G"] * (c / 6.0) ** fit["a"] for c in budgets], f"{path.name}: N*=G*(C/6)^a"
  raise UserError(field, f"{path} has neither k_params/a nor G/a", "fit with approach2, approach3 or vpnls")


def isoflop_sizes(family: SizeFamily, base: Config, n_star: float, k: int, spread: float,
                  convention: str) -> list[dict]:
  """k distinct sizes of the family nearest (in log params) to the log grid N*·spread^[-1..1], in increasing size.

  Targets are matched in order to strictly increasing widths, so coarse width steps at tiny sizes still give k
  distinct models (each as close to its target as the ones left allow)."""
  targets = [n_star * spread ** (2 * i / (k - 1) - 1) for i in range(k)] if k > 1 else [n_star]
  model = dataclasses.asdict(base.model)
  candidates = []
  for w in range(family.width_step, 16384 + 1, family.width_step):
    fields = family.model_fields(w)
    n = flops.param_counts(ModelConfig(**{**model, **fields}), base.vocab_size)[convention]
    candidates.append((n, fields))
  out, last = [], -1
  for i, target in enumerate(targets):
    room = len(candidates) - (k - i)   # leave a larger width for every target still to place
    j = min(range(last + 1, room + 1), key=lambda c: abs(math.log(candidates[c][0] / target)))
    out.append(candidates[j][1])
    last = j
  return out


def positive_number(v, field: str, what: str) -> float:
  """A number > 0; YAML 1.1 reads exponent notation without a dot (3e11) as a string, so accept numeric text."""
  if isinstance(v, str):
    try:
      v = float(v)
    except ValueError:
      pass
  if not _positive(v):
    raise UserError(field, f"{what} must be a number > 0, got {v!r}")
  return float(v)


def _positive(v) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
