"""The optimizer: optax AdamW with warmup + cosine / warmup-stable-decay / constant, global-norm clipping, EMA.

Every hyper-parameter is an array in the train state (`state["hyper"]`), not a Python constant, so runs that differ
only in LR, betas, schedule length or seed share one compiled program, and a sweep can vmap over them.
"""
import math

import jax
import jax.numpy as jnp
import optax

from mdm_jax.config import LR_SCHEDULES, Config


def hyperparams(cfg: Config) -> dict[str, float]:
  """The resolved scalar hyper-parameters of a run (schedule lengths in optimizer steps)."""
  o, total = cfg.optim, cfg.total_steps
  warmup = o.warmup * total if o.warmup < 1 else o.warmup
  return {
      "lr": o.lr, "b1": o.b1, "b2": o.b2, "eps": o.eps, "weight_decay": o.weight_decay,
      "grad_clip": o.grad_clip, "ema_decay": o.ema_decay, "min_lr_ratio": o.min_lr_ratio,
      "warmup_steps": float(min(max(round(warmup), 0), total)), "total_steps": float(total),
      "decay_steps": float(max(round(o.decay_fraction * total), 1)),
      "schedule_code": float(LR_SCHEDULES.index(o.lr_schedule)),
  }


def hyper_arrays(hyper: dict[str, float]) -> dict[str, jax.Array]:
  return {k: jnp.asarray(v, jnp.float32) for k, v in hyper.items()}


def lr_at(step, h):
  """Learning rate at optimizer step `step` (0-based) from the hyper arrays `h`."""
  step = jnp.asarray(step, jnp.float32)
  warm = jnp.minimum(1.0, (step + 1.0) / jnp.maximum(h["warmup_steps"], 1.0))
  span = jnp.maximum(h["total_steps"] - h["warmup_steps"], 1.0)
  progress = jnp.clip((step - h["warmup_steps"]) / span, 0.0, 1.0)
  floor = h["min_lr_ratio"]
  cosine = floor + (1.0 - floor) * 0.5 * (1.0 + jnp.cos(math.pi * progress))
  decay_progress = jnp.clip((step - (h["total_steps"] - h["decay_steps"])) / h["decay_steps"], 0.0, 1.0)
  wsd = floor + (1.0 - floor) * (1.0 - jnp.sqrt(decay_progress))   # 1 − √ cooldown (GIDD/Complete^(d)P)
  shape = jnp.select([h["schedule_code"] == 0, h["schedule_code"] == 1], [cosine, wsd], 1.0)
  return h["lr"] * warm * shape


def decay_mask(params):
  """Weight decay on matrices only; norm scales are not decayed."""
  return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_optimizer(params) -> optax.GradientTransformation:
  # Values given here are placeholders: `update` overwrites every injected hyper-parameter from state["hyper"].
  return optax.inject_hyperparams(optax.adamw)(
      learning_rate=0.0, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.0, mask=decay_mask(params))


def init_state(params, hyper: dict[str, float], optimizer: optax.GradientTransformation):
  h = hyper_arrays(hyper)
  return {"step": jnp.zeros((), jnp.int32), "params": params, "opt": optimizer.init(params),
          "ema": params if hyper["ema_decay"] > 0 else None, "hyper": h}


def global_norm(tree):
  return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(tree)))


def update(state, grads, optimizer: optax.GradientTransformation):
  """One optimizer step: clip, AdamW with the scheduled LR, EMA. Returns (new state, metrics)."""
  h = state["hyper"]
  grad_norm = global_norm(grads)
  clip = jnp.where(h["grad_clip"] > 0, jnp.minimum(1.0, h["grad_clip"] / (grad_norm + 1e-12)), 1.0)
  grads = jax.tree.map(lambda g: g * clip, grads)
  lr = lr_at(state["step"], h)
  opt = state["opt"]
  injected = {"learning_rate": lr, "b1": h["b1"], "b2": h["b2"], "eps": h["eps"], "weight_decay": h["weight_decay"]}
  opt = opt._replace(hyperparams={**opt.hyperparams, **injected})
  updates, opt = optimizer.update(grads, opt, state["params"])
  params = optax.apply_updates(state["params"], updates)
  ema = state["ema"]
  if ema is not None:
    ema = jax.tree.map(lambda e, p: h["ema_decay"] * e + (1.0 - h["ema_decay"]) * p, ema, params)
  new = {**state, "step": state["step"] + 1, "params": params, "opt": opt, "ema": ema}
  return new, {"optim/lr": lr, "optim/grad_norm": grad_norm}
