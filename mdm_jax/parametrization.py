"""Parametrisations: how init, forward multipliers and per-group optimiser values follow width, depth and batch.

METHOD.md §3–4. With m_d = d/d_base and m_L = L/L_base, CompleteP (Dey et al., arXiv 2505.01618; α = 1, or
α = ½ for Depth-μP) multiplies the base values per parameter group as follows (ε of the embedding, final norm and
head is ε/m_d: the Complete^(d)P fix; ε tracks the group's gradient scale, which is 1/m_d everywhere under μP and
a further m_L^-α inside residual branches):

  group       init std      LR                  Adam ε              weight decay (lr-coupled)
  embed       σ             η                   ε/m_d               λ
  hidden      σ/√m_d        η·m_d^-1·m_L^(α-1)  ε·m_d^-1·m_L^-α     λ·m_d
  norm        ones          η·m_L^(α-1)         ε·m_d^-1·m_L^-α     0
  final_norm  ones          η                   ε/m_d               0
  head        zero          η                   ε/m_d               λ
  forward: residual branch × r·m_L^-α, logits × h/m_d, embedding × e.

SP keeps every factor at 1 (norms are never decayed). Complete^(d)P's per-module factors ("MODULE.QUANTITY=VALUE"
in `param.extra`, MODULE a leaf name or a group) multiply on top. With the decoupled WD convention the stored WD
factor is LR factor × coupled WD factor, so the per-step decay matches the lr-coupled rule. The SDE rule (§4.2)
then rescales the *base* values by κ = (B/B_base)·(D_base/D)^γ, B the logical batch and D the token horizon.
"""
import math
import typing

from mdm_jax.errors import ConfigError

if typing.TYPE_CHECKING:   # config.py validates `param.extra` with parse_extra, so no runtime import back
  from mdm_jax.config import Config

GROUPS = ("embed", "hidden", "norm", "final_norm", "head")
MODULE_GROUP = {
    "embed": "embed", "wq": "hidden", "wk": "hidden", "wv": "hidden", "wo": "hidden", "w_gate": "hidden",
    "w_up": "hidden", "w_down": "hidden", "attn_norm": "norm", "mlp_norm": "norm", "q_norm": "norm",
    "k_norm": "norm", "final_norm": "final_norm", "head": "head",
}
MODULES = tuple(MODULE_GROUP)
QUANTITIES = ("init", "lr", "eps", "wd")
_NO_INIT = ("norm", "final_norm", "head")   # initialised at ones / zero, not from a std


def parse_extra(entries) -> dict[tuple[str, str], float]:
  """("wo.lr=0.5", "hidden.eps=2") -> {("wo", "lr"): 0.5, ("hidden", "eps"): 2.0}; bad entries raise ConfigError."""
  out = {}
  for entry in entries:
    name, sep, value = entry.partition("=")
    target, dot, quantity = name.strip().rpartition(".")
    fix = f"write MODULE.QUANTITY=VALUE, MODULE in {', '.join(GROUPS + MODULES)}, QUANTITY in {', '.join(QUANTITIES)}"
    if not (sep and dot) or target not in GROUPS + MODULES or quantity not in QUANTITIES:
      raise ConfigError("extra", f"bad per-module multiplier {entry!r}", fix)
    try:
      factor = float(value)
    except ValueError:
      raise ConfigError("extra", f"{entry!r}: {value!r} is not a number", fix) from None
    if not (math.isfinite(factor) and factor >= 0):
      raise ConfigError("extra", f"{entry!r}: factor must be finite and >= 0")
    if quantity == "init" and MODULE_GROUP.get(target, target) in _NO_INIT:
      raise ConfigError("extra", f"{entry!r}: {target} is initialised at ones/zero, not from a std",
                        "set init factors on embed or hidden modules only")
    if (target, quantity) in out:
      raise ConfigError("extra", f"{target}.{quantity} is set twice", "give each factor once")
    out[(target, quantity)] = factor
  return out


def scales(cfg: "Config") -> tuple[float, float]:
  """(m_d, m_L): width and depth relative to the base model; (1, 1) under SP."""
  p = cfg.param
  if p.parametrization == "sp":
    return 1.0, 1.0
  return cfg.model.d_model / p.base_width, cfg.model.n_layers / p.base_depth


def group_rules(cfg: "Config") -> dict[str, dict[str, float]]:
  """Per-group factors on the base (init std, LR, Adam ε, lr-coupled WD): the table in the module docstring."""
  rules = {g: {"init": 1.0, "lr": 1.0, "eps": 1.0, "wd": 1.0} for g in GROUPS}
  for g in ("norm", "final_norm"):
    rules[g]["wd"] = 0.0
  rules["head"]["init"] = 0.0
  if cfg.param.parametrization == "completep":
    m_d, m_l = scales(cfg)
    a = cfg.param.alpha
    rules["embed"].update(eps=1 / m_d)
    rules["hidden"].update(init=m_d ** -0.5, lr=m_l ** (a - 1) / m_d, eps=m_l ** -a / m_d, wd=m_d)
    rules["norm"].update(lr=m_l ** (a - 1), eps=m_l ** -a / m_d)
    rules["final_norm"].update(eps=1 / m_d)
    rules["head"].update(eps=1 / m_d)
  return rules


def group_factors(cfg: "Config") -> dict[str, dict[str, float]]:
  """Per-group factors as stored: the rule × group-level extras, WD in the run's convention."""
  rules, extra = group_rules(cfg), parse_extra(cfg.param.extra)
  out = {g: {q: rules[g][q] * extra.get((g, q), 1.0) for q in QUANTITIES} for g in GROUPS}
  if cfg.optim.weight_decay_convention == "decoupled":
    for f in out.values():
      f["wd"] *= f["lr"]   # decoupled decay does not pass through the LR: fold the LR factor in
  return out


def module_factors(cfg: "Config") -> dict[str, dict[str, float]]:
  """Per-module factors: the group's × module-level extras (a module LR extra also scales its decoupled decay)."""
  groups, extra = group_factors(cfg), parse_extra(cfg.param.extra)
  decoupled = cfg.optim.weight_decay_convention == "decoupled"
  out = {}
  for module, group in MODULE_GROUP.items():
    own = {} if module in GROUPS else {q: extra.get((module, q), 1.0) for q in QUANTITIES}   # embed/head: done
    f = {q: groups[group][q] * own.get(q, 1.0) for q in QUANTITIES}
    if decoupled:
      f["wd"] *= own.get("lr", 1.0)
    out[module] = f
  return out


def forward(cfg: "Config") -> dict[str, float]:
  p = cfg.param
  m_d, m_l = scales(cfg)
  depth = m_l ** -p.alpha if p.parametrization == "completep" else 1.0
  return {"residual": p.residual_mult * depth, "head": p.head_mult / m_d, "embed": p.embed_mult}


def multipliers(cfg: "Config"):
  """The model's `Multipliers` (forward factors and init stds) for this config."""
  from mdm_jax.model import Multipliers
  sigma, groups, f = cfg.model.init_std, group_factors(cfg), module_factors(cfg)
  by_module = tuple((m, sigma * f[m]["init"]) for m in MODULES
                    if MODULE_GROUP[m] == "hidden" and f[m]["init"] != groups["hidden"]["init"])
  return Multipliers(**forward(cfg), init_std_hidden=sigma * groups["hidden"]["init"],
                     init_std_embed=sigma * groups["embed"]["init"], init_std_by_module=by_module)


def token_horizon(cfg: "Config") -> int:
  """D: the tokens this run trains on (logical batch × seq_len × steps)."""
  return cfg.total_steps * cfg.tokens_per_step


def kappa(cfg: "Config") -> float:
  """κ = (B/B_base)·(D_base/D)^γ with B the logical batch; 1 when the SDE rule is off."""
  s = cfg.sde
  if not s.enabled:
    return 1.0
  horizon = (s.base_tokens / token_horizon(cfg)) ** s.gamma if s.gamma > 0 else 1.0
  return cfg.batch.logical / s.base_batch * horizon


def sde_resolved(cfg: "Config") -> dict[str, float]:
  """Base optimiser values after the κ rule: lr·√κ, β^κ, ε/√κ, WD·√κ (lr-coupled) or WD·κ (decoupled), EMA^κ."""
  o, k = cfg.optim, kappa(cfg)
  wd_power = 0.5 if o.weight_decay_convention == "lr-coupled" else 1.0
  return {"kappa": k, "lr": o.lr * math.sqrt(k), "b1": o.b1 ** k, "b2": o.b2 ** k, "eps": o.eps / math.sqrt(k),
          "weight_decay": o.weight_decay * k ** wd_power, "ema_decay": o.ema_decay ** k if o.ema_decay > 0 else 0.0}


def resolved(cfg: "Config") -> dict:
  """What run.json records: κ, scales, forward multipliers, and per-group absolute init std / peak LR / ε / WD."""
  base, f = sde_resolved(cfg), module_factors(cfg)
  m_d, m_l = scales(cfg)
  sigma = cfg.model.init_std

  def absolute(factors):
    return {"init_std": sigma * factors["init"], "lr": base["lr"] * factors["lr"], "eps": base["eps"] * factors["eps"],
            "weight_decay": base["weight_decay"] * factors["wd"]}

  g_factors = group_factors(cfg)
  groups = {g: absolute(g_factors[g]) for g in GROUPS}
  groups["norm"]["init_std"] = groups["final_norm"]["init_std"] = None   # ones
  differing = {m: absolute(f[m]) for m in MODULES if f[m] != g_factors[MODULE_GROUP[m]]}
  return {"parametrization": cfg.param.parametrization, "width_mult": m_d, "depth_mult": m_l,
          "alpha": cfg.param.alpha, "weight_decay_convention": cfg.optim.weight_decay_convention,
          "sde": {**base, "enabled": cfg.sde.enabled, "tokens": token_horizon(cfg), "batch": cfg.batch.logical},
          "forward": forward(cfg), "groups": groups, "modules": differing}


def module_of(path) -> str:
  """The module name of a parameter leaf path, e.g. (blocks, 0, attn, q_norm, scale) -> 'q_norm'."""
  keys = [getattr(k, "key", getattr(k, "name", k)) for k in path]
  name = keys[-2] if keys[-1] == "scale" and len(keys) > 1 else keys[-1]
  if name not in MODULE_GROUP:
    raise KeyError(f"parameter {'/'.join(map(str, keys))} has no parametrization group; add it to MODULE_GROUP")
  return name
