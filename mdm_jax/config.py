"""The run config: frozen dataclasses, validated on construction, loadable from YAML/JSON with `key=value` overrides.

Every invalid value raises `ConfigError(field, problem, fix)`, one line naming the dotted field. Checks that need
the device count (mesh fit, batch divisibility) live in `mdm_jax.sharding`.
"""
import dataclasses
import hashlib
import json
import math
import pathlib
import typing

from mdm_jax.errors import ConfigError, parse_yaml

SCHEDULES = ("linear", "loglinear", "cosine", "polynomial")
LR_SCHEDULES = ("cosine", "wsd", "constant")
PARAMETRIZATIONS = ("sp", "completep")
WD_CONVENTIONS = ("lr-coupled", "decoupled")   # θ ← θ − η(u + λθ)  |  θ ← θ − ηu − (η_t/η)·λθ
CONFIG_DIR = pathlib.Path(__file__).parent / "configs"


def _check(ok: bool, field: str, problem: str, fix: str = ""):
  if not ok:
    raise ConfigError(field, problem, fix)


def _positive(obj, *names):
  for name in names:
    _check(getattr(obj, name) > 0, name, f"must be > 0, got {getattr(obj, name)!r}")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  d_model: int = 128
  n_layers: int = 2
  n_heads: int = 4
  d_ff: int = 512
  rope_theta: float = 10_000.0
  norm_eps: float = 1e-6
  init_std: float = 0.02          # hidden/embedding init std under the standard parametrisation
  qk_norm: bool = True

  def __post_init__(self):
    _positive(self, "d_model", "n_layers", "n_heads", "d_ff", "rope_theta", "norm_eps", "init_std")
    _check(self.d_model % self.n_heads == 0, "n_heads",
           f"must divide d_model={self.d_model}, got {self.n_heads}", "pick n_heads with d_model % n_heads == 0")
    _check((self.d_model // self.n_heads) % 2 == 0, "n_heads", "head dim d_model/n_heads must be even for RoPE")

  @property
  def head_dim(self) -> int:
    return self.d_model // self.n_heads


@dataclasses.dataclass(frozen=True)
class DataConfig:
  source: str = "shakespeare"     # the embedded corpus, or a directory made by `mdm-lab data prepare`
  seq_len: int = 128
  text_vocab_size: int = 499      # BPE ids; the model vocab adds image/audio codes and the specials
  image_vocab_size: int = 0
  audio_vocab_size: int = 0
  val_documents: int = 1          # whole documents held out for validation
  mixture: tuple[float, ...] = (1.0, 0.0, 0.0)   # non-pad token shares of (text, image, audio)

  def __post_init__(self):
    _positive(self, "seq_len", "val_documents")
    _check(self.text_vocab_size >= 260, "text_vocab_size", f"must be >= 260 (byte alphabet + merges), got "
           f"{self.text_vocab_size}")
    _check(self.image_vocab_size >= 0 and self.audio_vocab_size >= 0, "image_vocab_size",
           "codebook sizes must be >= 0")
    _check(len(self.mixture) == 3, "mixture", f"needs 3 weights (text, image, audio), got {len(self.mixture)}")
    _check(all(w >= 0 for w in self.mixture), "mixture", f"weights must be >= 0, got {list(self.mixture)}")
    _check(abs(sum(self.mixture) - 1) < 1e-6, "mixture", f"weights must sum to 1, got {sum(self.mixture):.6g}")


@dataclasses.dataclass(frozen=True)
class DiffusionConfig:
  schedule: str = "linear"
  poly_exponent: float = 2.0      # p in alpha_t = 1 - t^p
  sampling_eps: float = 1e-3
  antithetic: bool = True         # stratified t over the global batch
  eval_t_points: int = 8          # fixed t grid for the validation ELBO

  def __post_init__(self):
    _check(self.schedule in SCHEDULES, "schedule", f"unknown schedule {self.schedule!r}",
           f"use one of {', '.join(SCHEDULES)}")
    _positive(self, "poly_exponent", "eval_t_points")
    _check(0 < self.sampling_eps < 1, "sampling_eps", f"must be in (0, 1), got {self.sampling_eps}")


@dataclasses.dataclass(frozen=True)
class OptimConfig:
  lr: float = 3e-3
  lr_schedule: str = "cosine"     # warmup + cosine | warmup-stable-decay | warmup + constant
  warmup: float = 0.05            # fraction of the run (< 1) or a step count (>= 1)
  decay_fraction: float = 0.2     # WSD: final fraction of the run spent decaying (1 - sqrt shape)
  min_lr_ratio: float = 0.1
  b1: float = 0.9
  b2: float = 0.95
  eps: float = 1e-8
  weight_decay: float = 0.1
  grad_clip: float = 1.0          # global-norm clip; 0 disables
  ema_decay: float = 0.0          # EMA of parameters; 0 disables
  weight_decay_convention: str = "lr-coupled"   # AdamW (optax) | decoupled "AdamLH"; sets the κ rule for WD

  def __post_init__(self):
    _check(self.weight_decay_convention in WD_CONVENTIONS, "weight_decay_convention",
           f"unknown convention {self.weight_decay_convention!r}", f"use one of {', '.join(WD_CONVENTIONS)}")
    _check(self.lr_schedule in LR_SCHEDULES, "lr_schedule", f"unknown lr schedule {self.lr_schedule!r}",
           f"use one of {', '.join(LR_SCHEDULES)}")
    _positive(self, "lr", "eps")
    _check(self.warmup >= 0, "warmup", "must be >= 0")
    for name in ("decay_fraction", "min_lr_ratio"):
      _check(0 <= getattr(self, name) <= 1, name, f"must be in [0, 1], got {getattr(self, name)}")
    for name in ("b1", "b2", "ema_decay"):
      _check(0 <= getattr(self, name) < 1, name, f"must be in [0, 1), got {getattr(self, name)}")
    _check(self.weight_decay >= 0 and self.grad_clip >= 0, "weight_decay", "weight_decay and grad_clip must be >= 0")


@dataclasses.dataclass(frozen=True)
class ParamConfig:
  """How initialisation, forward multipliers and per-group optimiser values scale with width and depth (§3)."""
  parametrization: str = "sp"     # sp: every multiplier 1 | completep: μP in width, L^-α residual branches in depth
  base_width: int = 0             # d_base of the tuned proxy (required for completep)
  base_depth: int = 0             # L_base of the tuned proxy (required for completep)
  alpha: float = 1.0              # depth exponent: 1 = CompleteP, 0.5 = Depth-μP
  residual_mult: float = 1.0      # residual branch multiplier at the base depth
  head_mult: float = 1.0          # output logit multiplier at the base width (α_output)
  embed_mult: float = 1.0         # embedding output multiplier (α_input)
  extra: tuple[str, ...] = ()     # Complete^(d)P per-module factors "MODULE.QUANTITY=VALUE", e.g. "wo.lr=0.5"

  def __post_init__(self):
    _check(self.parametrization in PARAMETRIZATIONS, "parametrization", f"unknown {self.parametrization!r}",
           f"use one of {', '.join(PARAMETRIZATIONS)}")
    _check(self.alpha in (0.5, 1.0), "alpha", f"must be 0.5 (Depth-μP) or 1 (CompleteP), got {self.alpha}")
    _check(self.base_width >= 0 and self.base_depth >= 0, "base_width", "base_width and base_depth must be >= 0")
    if self.parametrization == "completep":
      for name in ("base_width", "base_depth"):
        _check(getattr(self, name) > 0, name, "must be set for completep",
               "the width/depth at which the hyper-parameters were tuned, e.g. --set param.base_width=128")
    _positive(self, "residual_mult", "head_mult", "embed_mult")
    from mdm_jax.parametrization import parse_extra   # late: keeps config.py free of model knowledge
    parse_extra(self.extra)


@dataclasses.dataclass(frozen=True)
class SDEConfig:
  """The κ rule (§4.2): κ = (B/B_base)·(D_base/D)^γ rescales LR, betas, ε, WD and EMA of the base values."""
  enabled: bool = False
  base_batch: int = 16            # B_base: logical batch (sequences) at which the optim values were tuned
  base_tokens: int = 0            # D_base: token horizon at which they were tuned (needed when gamma > 0)
  gamma: float = 0.44             # horizon exponent (tri-modal fit); fit your own with labs/batch_size

  def __post_init__(self):
    _positive(self, "base_batch")
    _check(self.gamma >= 0 and self.base_tokens >= 0, "gamma", "gamma and base_tokens must be >= 0")
    _check(not (self.enabled and self.gamma > 0 and self.base_tokens == 0), "base_tokens",
           "must be set when sde.enabled and gamma > 0", "the pilot's token horizon D_base, or set sde.gamma=0")


@dataclasses.dataclass(frozen=True)
class BatchConfig:
  logical: int = 16               # sequences per optimizer step (what the optimiser and kappa see)
  physical: int = 0               # sequences per micro-step (what fits the device); 0 = logical

  def __post_init__(self):
    _positive(self, "logical")
    _check(self.physical >= 0, "physical", "must be >= 0 (0 means equal to logical)")
    _check(self.logical % self.micro == 0, "physical",
           f"must divide logical={self.logical}, got {self.physical}", "gradient accumulation needs whole micro-steps")

  @property
  def micro(self) -> int:
    return self.physical or self.logical

  @property
  def accumulation(self) -> int:
    return self.logical // self.micro


@dataclasses.dataclass(frozen=True)
class MeshConfig:
  data: int = -1                  # -1: all devices not used by the other axes
  fsdp: int = 1
  tensor: int = 1

  def __post_init__(self):
    for name in ("data", "fsdp", "tensor"):
      v = getattr(self, name)
      _check(v == -1 or v > 0, name, f"mesh axis size must be > 0 or -1 (fill), got {v}")
    _check([self.data, self.fsdp, self.tensor].count(-1) <= 1, "data", "at most one mesh axis may be -1")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  steps: int = 300                # optimizer steps; 0 = derive from `tokens`
  tokens: int = 0                 # token budget D (logical batch x seq_len x steps)
  seed: int = 0
  log_every: int = 10
  eval_every: int = 100
  eval_batches: int = 4
  checkpoint_every: int = 200
  keep_checkpoints: int = 2
  peak_flops: float = 0.0         # per-device peak FLOP/s for MFU; 0 = look up the device kind or measure
  max_grad_norm: float = 0.0      # divergence: stop (status diverged) once a step's gradient norm exceeds it; 0 = off
  steps_per_call: int = 16        # steps per device call (a device-side loop); execution only, not in the run id

  def __post_init__(self):
    _check(self.steps >= 0 and self.tokens >= 0, "steps", "steps and tokens must be >= 0")
    _check(self.steps > 0 or self.tokens > 0, "steps", "set steps or tokens", "e.g. --set train.steps=300")
    _positive(self, "log_every", "eval_every", "eval_batches", "checkpoint_every", "keep_checkpoints",
              "steps_per_call")
    _check(self.peak_flops >= 0, "peak_flops", "must be >= 0")
    _check(math.isfinite(self.max_grad_norm) and self.max_grad_norm >= 0, "max_grad_norm",
           f"must be a finite number >= 0 (0 = off), got {self.max_grad_norm}", "e.g. --set train.max_grad_norm=100")


@dataclasses.dataclass(frozen=True)
class Config:
  model: ModelConfig = ModelConfig()
  data: DataConfig = DataConfig()
  diffusion: DiffusionConfig = DiffusionConfig()
  optim: OptimConfig = OptimConfig()
  param: ParamConfig = ParamConfig()
  sde: SDEConfig = SDEConfig()
  batch: BatchConfig = BatchConfig()
  mesh: MeshConfig = MeshConfig()
  train: TrainConfig = TrainConfig()
  output_dir: str = ""

  @property
  def vocab_size(self) -> int:
    return self.vocab.size

  @property
  def vocab(self):
    from mdm_jax.data.vocab import Vocab
    d = self.data
    return Vocab(d.text_vocab_size, d.image_vocab_size, d.audio_vocab_size)

  @property
  def tokens_per_step(self) -> int:
    return self.batch.logical * self.data.seq_len

  @property
  def total_steps(self) -> int:
    return self.train.steps or math.ceil(self.train.tokens / self.tokens_per_step)

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  def fingerprint(self) -> str:
    """A stable hash of everything that defines the run (output_dir and how steps are dispatched excluded)."""
    d = self.to_dict()
    d.pop("output_dir")
    d["train"].pop("steps_per_call")
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

  def replace(self, **dotted) -> "Config":
    """Copy with dotted-key updates, e.g. cfg.replace(**{"optim.lr": 1e-3}); values are validated."""
    return from_dict(_merge(self.to_dict(), _nest(dotted)))


# --- building from dicts, files and overrides -------------------------------------------------------------------

def _coerce(value, tp, field: str):
  origin = typing.get_origin(tp)
  if origin is tuple:
    if isinstance(value, str):
      value = (parse_yaml(value, field, "e.g. [0.6, 0.3, 0.1]", ConfigError) if value.startswith("[")
               else [v for v in value.split(",") if v])
    _check(isinstance(value, (list, tuple)), field, f"expected a list, got {value!r}")
    (item_tp, _) = typing.get_args(tp)
    return tuple(_coerce(v, item_tp, field) for v in value)
  if tp is bool:
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
      return value.lower() in ("true", "1", "yes")
    _check(isinstance(value, bool), field, f"expected true or false, got {value!r}")
    return value
  if tp in (int, float):
    if isinstance(value, str):
      try:
        value = float(value)
      except ValueError:
        raise ConfigError(field, f"expected a number, got {value!r}") from None
    _check(isinstance(value, (int, float)) and not isinstance(value, bool), field, f"expected a number, got {value!r}")
    _check(math.isfinite(value), field, f"must be a finite number, got {value!r}")
    if tp is int:
      _check(float(value).is_integer(), field, f"expected an integer, got {value!r}")
      return int(value)
    return float(value)
  if tp is str:
    _check(isinstance(value, (str, int, float)), field, f"expected a string, got {value!r}")
    return str(value)
  raise TypeError(f"unsupported config type {tp} for {field}")


def _build(cls, data: dict, prefix: str):
  _check(isinstance(data, dict), prefix.rstrip(".") or "config", f"expected a mapping, got {type(data).__name__}")
  hints = typing.get_type_hints(cls)
  fields = {f.name for f in dataclasses.fields(cls)}
  for key in data:
    _check(key in fields, prefix + key, "unknown config field",
           f"valid fields here: {', '.join(sorted(fields))}")
  kwargs = {}
  for key, value in data.items():
    tp = hints[key]
    if dataclasses.is_dataclass(tp):
      kwargs[key] = _build(tp, value, prefix + key + ".")
    else:
      kwargs[key] = _coerce(value, tp, prefix + key)
  try:
    return cls(**kwargs)
  except ConfigError as e:  # prefix the section so the message names the full dotted field
    if "." not in e.field and prefix:
      raise ConfigError(prefix + e.field, e.problem, e.fix) from None
    raise


def from_dict(data: dict) -> Config:
  return _build(Config, data, "")


def _nest(dotted: dict) -> dict:
  out: dict = {}
  for key, value in dotted.items():
    node = out
    *parents, leaf = key.split(".")
    for p in parents:
      node = node.setdefault(p, {})
      _check(isinstance(node, dict), key, "cannot set a field inside a scalar")
    node[leaf] = value
  return out


def _merge(base: dict, update: dict) -> dict:
  out = dict(base)
  for k, v in update.items():
    out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
  return out


def parse_overrides(items: typing.Sequence[str]) -> dict:
  """['optim.lr=1e-3', 'model.d_model=256'] -> nested dict; values are parsed as YAML scalars."""
  dotted = {}
  for item in items:
    key, sep, value = item.partition("=")
    _check(bool(sep) and bool(key), item, "override must look like section.field=value", "e.g. --set optim.lr=1e-3")
    dotted[key.strip()] = parse_yaml(value, key.strip(), "fix its YAML syntax, e.g. [a, b] for a list",
                                     ConfigError) if value.strip() else ""
  return _nest(dotted)


def load_config(source: str | pathlib.Path | None = None, overrides: typing.Sequence[str] = ()) -> Config:
  """Load a YAML/JSON file (or a bundled name such as 'tiny'), then apply `key=value` overrides."""
  data: dict = {}
  if source:
    path = pathlib.Path(source)
    if not path.exists() and (CONFIG_DIR / f"{source}.yaml").exists():
      path = CONFIG_DIR / f"{source}.yaml"
    _check(path.is_file(), str(source), "config file not found",
           f"give a YAML/JSON path or one of: {', '.join(p.stem for p in sorted(CONFIG_DIR.glob('*.yaml')))}")
    data = parse_yaml(path.read_bytes(), str(path), error=ConfigError) or {}   # JSON is valid YAML
    _check(isinstance(data, dict), str(path), f"must be a mapping of config sections, got a {type(data).__name__}",
           "e.g. model: {d_model: 128}")
  return from_dict(_merge(data, parse_overrides(overrides)))
