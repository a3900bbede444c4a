"""The optimizer: Adam with per-module LR/ε/WD factors, warmup + cosine / WSD / constant, clipping, EMA.

Every hyper-parameter is an array in the train state (`state["hyper"]`), not a Python constant: the κ-resolved base
values (lr, b1, b2, eps, weight_decay, ema_decay), the schedule, and per-module factors "lr_mult/<module>",
"eps_mult/<module>", "wd_mult/<module>" from `mdm_jax.parametrization`. Runs that differ only in values — LR, batch
via κ, base width, α, extras — share one compiled program, and a sweep can vmap over them. Under SP with one ε the
update is optax.adamw's exactly (lr-coupled decay on matrices only).
"""
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mdm_jax import parametrization
from mdm_jax.config import LR_SCHEDULES, Config

RESOLVED = "resolved"   # the hyperparams(cfg) entry that is recorded in run.json but not a state array


def hyperparams(cfg: Config) -> dict:
  """The resolved hyper-parameters of a run: scalar state values (schedule lengths in optimizer steps) plus
  `resolved`, a nested summary (κ, per-group absolute values, forward multipliers) for run.json."""
  o, total = cfg.optim, cfg.total_steps
  warmup = o.warmup * total if o.warmup < 1 else o.warmup
  base = parametrization.sde_resolved(cfg)
  hyper = {
      "lr": base["lr"], "b1": base["b1"], "b2": base["b2"], "eps": base["eps"],
      "weight_decay": base["weight_decay"], "ema_decay": base["ema_decay"],
      "grad_clip": o.grad_clip, "min_lr_ratio": o.min_lr_ratio,
      "warmup_steps": float(min(max(round(warmup), 0), total)), "total_steps": float(total),
      "decay_steps": float(max(round(o.decay_fraction * total), 1)),
      "schedule_code": float(LR_SCHEDULES.index(o.lr_schedule)),
      "decoupled_wd": float(o.weight_decay_convention == "decoupled"),
  }
  for module, f in parametrization.module_factors(cfg).items():
    hyper.update({f"lr_mult/{module}": f["lr"], f"eps_mult/{module}": f["eps"], f"wd_mult/{module}": f["wd"]})
  hyper[RESOLVED] = parametrization.resolved(cfg)
  return hyper


def hyper_arrays(hyper: dict) -> dict[str, jax.Array]:
  return {k: jnp.asarray(v, jnp.float32) for k, v in hyper.items() if k != RESOLVED}


def schedule_at(step, h):
  """The LR schedule's factor in [0, 1] at optimizer step `step` (0-based) from the hyper arrays `h`."""
  step = jnp.asarray(step, jnp.float32)
  warm = jnp.minimum(1.0, (step + 1.0) / jnp.maximum(h["warmup_steps"], 1.0))
  span = jnp.maximum(h["total_steps"] - h["warmup_steps"], 1.0)
  progress = jnp.clip((step - h["warmup_steps"]) / span, 0.0, 1.0)
  floor = h["min_lr_ratio"]
  cosine = floor + (1.0 - floor) * 0.5 * (1.0 + jnp.cos(math.pi * progress))
  decay_progress = jnp.clip((step - (h["total_steps"] - h["decay_steps"])) / h["decay_steps"], 0.0, 1.0)
  wsd = floor + (1.0 - floor) * (1.0 - jnp.sqrt(decay_progress))   # 1 − √ cooldown (GIDD/Complete^(d)P)
  shape = jnp.select([h["schedule_code"] == 0, h["schedule_code"] == 1], [cosine, wsd], 1.0)
  return warm * shape


def lr_at(step, h):
  """Base learning rate at optimizer step `step` (module LRs multiply it by their lr_mult)."""
  return h["lr"] * schedule_at(step, h)


class AdamState(NamedTuple):
  count: jax.Array
  mu: Any
  nu: Any


def module_tree(params):
  """The parametrization module name of every leaf (static: it depends on the parameter paths only)."""
  return jax.tree_util.tree_map_with_path(lambda path, _: parametrization.module_of(path), params)


def make_optimizer(params) -> optax.GradientTransformationExtraArgs:
  """Adam with bias correction whose ε, LR and WD carry per-module factors; values come from `hyper` at update.

  lr-coupled: θ ← θ − η_t·a·(u + λ·w·θ);  decoupled: θ ← θ − η_t·a·u − s_t·λ·w·θ, with u = m̂/(√v̂ + ε·e),
  η_t = lr·s_t (s_t the schedule factor) and a, e, w the module's lr/eps/wd factors.
  """
  modules = module_tree(params)

  def init(params):
    zeros = lambda p: jnp.zeros(p.shape, jnp.float32)
    return AdamState(jnp.zeros([], jnp.int32), jax.tree.map(zeros, params), jax.tree.map(zeros, params))

  def update(grads, state, params, *, hyper, schedule):
    b1, b2 = hyper["b1"], hyper["b2"]
    count = state.count + 1
    mu = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, state.mu, grads)
    nu = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * jnp.square(g), state.nu, grads)
    correction1 = 1 - b1 ** count.astype(jnp.float32)
    correction2 = 1 - b2 ** count.astype(jnp.float32)
    lr_t = hyper["lr"] * schedule

    def leaf_update(m, v, p, module):
      u = (m / correction1) / (jnp.sqrt(v / correction2) + hyper["eps"] * hyper[f"eps_mult/{module}"])
      lr_module = lr_t * hyper[f"lr_mult/{module}"]
      decay_rate = jnp.where(hyper["decoupled_wd"] > 0, schedule, lr_module)
      decay = hyper["weight_decay"] * hyper[f"wd_mult/{module}"] * decay_rate
      return (-(lr_module * u + decay * p)).astype(p.dtype)

    updates = jax.tree.map(leaf_update, mu, nu, params, modules)
    return updates, AdamState(count, mu, nu)

  return optax.GradientTransformationExtraArgs(init, update)


def init_state(params, hyper: dict, optimizer: optax.GradientTransformation):
  h = hyper_arrays(hyper)
  return {"step": jnp.zeros((), jnp.int32), "params": params, "opt": optimizer.init(params),
          "ema": params if hyper["ema_decay"] > 0 else None, "hyper": h}


def global_norm(tree):
  return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(tree)))


def update(state, grads, optimizer: optax.GradientTransformationExtraArgs):
  """One optimizer step: clip, Adam with the scheduled per-module LRs, EMA. Returns (new state, metrics)."""
  h = state["hyper"]
  grad_norm = global_norm(grads)
  clip = jnp.where(h["grad_clip"] > 0, jnp.minimum(1.0, h["grad_clip"] / (grad_norm + 1e-12)), 1.0)
  grads = jax.tree.map(lambda g: g * clip, grads)
  schedule = schedule_at(state["step"], h)
  updates, opt = optimizer.update(grads, state["opt"], state["params"], hyper=h, schedule=schedule)
  params = optax.apply_updates(state["params"], updates)
  ema = state["ema"]
  if ema is not None:
    ema = jax.tree.map(lambda e, p: h["ema_decay"] * e + (1.0 - h["ema_decay"]) * p, ema, params)
  new = {**state, "step": state["step"] + 1, "params": params, "opt": opt, "ema": ema}
  return new, {"optim/lr": h["lr"] * schedule, "optim/grad_norm": grad_norm}
