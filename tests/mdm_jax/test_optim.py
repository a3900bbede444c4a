"""The optimizer and the κ rule: formulas, optax parity, logical vs physical batch (accumulation and κ paths)."""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mdm_jax import optim, sharding, step
from mdm_jax.config import load_config
from mdm_jax.data import pipeline
from mdm_jax.train import to_micro

SDE = ["sde.enabled=true", "sde.base_batch=16", "sde.base_tokens=1000000", "sde.gamma=0.5"]


def cfg_for(batch, *extra, physical=None, tokens=None):
  tokens = tokens or 1_000_000
  return load_config("tiny", [f"batch.logical={batch}", f"batch.physical={physical or batch}", "data.seq_len=128",
                              "train.steps=0", f"train.tokens={tokens}", "optim.ema_decay=0.999", *extra])


@pytest.mark.parametrize("convention, wd_power", [("lr-coupled", 0.5), ("decoupled", 1.0)])
@pytest.mark.parametrize("batch, tokens", [(64, 1_000_000), (4, 1_000_000), (16, 4_000_000), (64, 250_000)])
def test_kappa_resolved_values_follow_the_formulas(batch, tokens, convention, wd_power):
  cfg = cfg_for(batch, *SDE, f"optim.weight_decay_convention={convention}", tokens=tokens)
  d = cfg.total_steps * batch * 128
  kappa = (batch / 16) * (1_000_000 / d) ** 0.5
  h = optim.hyperparams(cfg)
  o = cfg.optim
  assert h["resolved"]["sde"]["kappa"] == pytest.approx(kappa, rel=1e-12)
  assert h["lr"] == pytest.approx(o.lr * math.sqrt(kappa), rel=1e-12)
  assert (h["b1"], h["b2"]) == pytest.approx((o.b1 ** kappa, o.b2 ** kappa), rel=1e-12)
  assert h["eps"] == pytest.approx(o.eps / math.sqrt(kappa), rel=1e-12)
  assert h["weight_decay"] == pytest.approx(o.weight_decay * kappa ** wd_power, rel=1e-12)
  assert h["ema_decay"] == pytest.approx(0.999 ** kappa, rel=1e-12)
  # The per-step decay grows by κ in either convention (κ× fewer steps cover the same horizon).
  base = optim.hyperparams(cfg.replace(**{"sde.enabled": False}))
  per_step = lambda hp: hp["weight_decay"] * (hp["lr"] if convention == "lr-coupled" else 1.0)
  assert per_step(h) == pytest.approx(kappa * per_step(base), rel=1e-12)


def test_beta_kappa_keeps_the_half_life_in_tokens():
  seq = 128
  half_lives = {}
  for batch in (4, 16, 64, 256):
    h = optim.hyperparams(cfg_for(batch, *SDE[:3], "sde.gamma=0"))
    tokens_per_step = batch * seq
    half_lives[batch] = [math.log(0.5) / math.log(h[k]) * tokens_per_step for k in ("b1", "b2", "ema_decay")]
  np.testing.assert_allclose(np.array(list(half_lives.values())), np.array([half_lives[16]] * 4), rtol=1e-9)
  assert half_lives[16][2] == pytest.approx(math.log(0.5) / math.log(0.999) * 16 * seq)


def test_physical_batch_does_not_enter_kappa():
  accumulated = optim.hyperparams(cfg_for(64, *SDE, physical=16))
  direct = optim.hyperparams(cfg_for(64, *SDE))
  assert accumulated == direct and accumulated["resolved"]["sde"]["kappa"] > 1


def test_schedule_matches_numpy():
  for name, code in (("cosine", 0), ("wsd", 1), ("constant", 2)):
    h = optim.hyperparams(load_config("tiny", [f"optim.lr_schedule={name}", "train.steps=100", "optim.warmup=10",
                                               "optim.decay_fraction=0.2", "optim.min_lr_ratio=0.1"]))
    s = np.arange(100.0)
    warm = np.minimum(1, (s + 1) / 10)
    progress = np.clip((s - 10) / 90, 0, 1)
    shape = [0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * progress)),
             0.1 + 0.9 * (1 - np.sqrt(np.clip((s - 80) / 20, 0, 1))), np.ones_like(s)][code]
    got = jax.vmap(lambda i: optim.lr_at(i, optim.hyper_arrays(h)))(jnp.arange(100))
    np.testing.assert_allclose(np.asarray(got), h["lr"] * warm * shape, rtol=1e-5)


def random_tree(seed, params):
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)


def small_params():
  """One leaf of every parametrization group, laid out as in the model (the optimizer reads the paths)."""
  cfg = load_config("tiny", ["model.d_model=32", "model.n_heads=2", "model.d_ff=64"])
  shapes = {"embed": (40, 32), "blocks": {0: {"attn": {"wq": (32, 32), "q_norm": {"scale": (16,)}},
                                              "mlp": {"w_up": (32, 64)}, "mlp_norm": {"scale": (32,)}}},
            "final_norm": {"scale": (32,)}, "head": (32, 40)}
  return cfg, random_tree(0, jax.tree.map(jnp.zeros, shapes, is_leaf=lambda x: isinstance(x, tuple)))


def run_updates(cfg, params, grads_list):
  h = optim.hyperparams(cfg)
  opt = optim.make_optimizer(params)
  state = optim.init_state(params, h, opt)
  update = jax.jit(lambda state, g: optim.update(state, g, opt))
  for g in grads_list:
    state, _ = update(state, g)
  return state["params"]


def test_sp_update_equals_optax_adamw():
  cfg, params = small_params()
  cfg = cfg.replace(**{"optim.lr_schedule": "constant", "optim.warmup": 0, "optim.grad_clip": 0,
                       "optim.weight_decay": 0.1, "optim.lr": 3e-3})
  grads = [random_tree(i + 1, params) for i in range(3)]
  ours = run_updates(cfg, params, grads)
  ref_opt = optax.adamw(3e-3, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.1,
                        mask=jax.tree.map(lambda p: p.ndim >= 2, params))
  ref, ref_state = params, ref_opt.init(params)
  for g in grads:
    upd, ref_state = ref_opt.update(g, ref_state, ref)
    ref = optax.apply_updates(ref, upd)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), ours, ref)


def test_decoupled_decay_with_lr_times_lambda_equals_lr_coupled():
  cfg, params = small_params()
  cfg = cfg.replace(**{"optim.lr_schedule": "cosine", "optim.warmup": 1, "optim.grad_clip": 0, "optim.lr": 3e-3,
                       "train.steps": 4, "param.parametrization": "completep", "param.base_width": 16,
                       "param.base_depth": 1})
  grads = [random_tree(i + 1, params) for i in range(4)]
  coupled = run_updates(cfg.replace(**{"optim.weight_decay": 0.5}), params, grads)
  decoupled = run_updates(cfg.replace(**{"optim.weight_decay": 0.5 * 3e-3,
                                         "optim.weight_decay_convention": "decoupled"}), params, grads)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9), coupled, decoupled)
  no_decay = run_updates(cfg.replace(**{"optim.weight_decay": 0.0}), params, grads)
  assert not np.allclose(no_decay["blocks"][0]["mlp"]["w_up"], coupled["blocks"][0]["mlp"]["w_up"], atol=1e-7)


# --- logical vs physical batch ----------------------------------------------------------------------------------

def two_steps(cfg, batches):
  """Params after each of two optimizer steps (the first moves only the zero-initialised head), losses, hyper."""
  mesh = sharding.make_mesh(cfg.mesh, jax.devices()[:1])
  steps = step.build(cfg, mesh)
  state = steps.init(step.seed_key(cfg.train.seed), optim.hyper_arrays(optim.hyperparams(cfg)))
  params, losses = [jax.device_get(state["params"])], []
  for batch_BxL in batches:
    state, metrics = steps.train(state, jax.device_put(to_micro(batch_BxL, cfg), steps.batch_sharding))
    params.append(jax.device_get(state["params"]))
    losses.append(float(metrics["train/loss"]))
  return params, losses, jax.device_get(state["hyper"])


def test_accumulating_micro_batches_equals_one_step_on_the_logical_batch():
  """Path 1: physical < logical; K micro-steps reach the logical batch and κ (from the logical batch) is unchanged."""
  over = ["model.d_model=32", "model.n_heads=2", "model.d_ff=64", "model.n_layers=2", "data.seq_len=32",
          "train.steps=4", "param.parametrization=completep", "param.base_width=16", "param.base_depth=1",
          "sde.enabled=true", "sde.base_batch=4", "sde.gamma=0", "optim.warmup=0"]
  full = load_config("tiny", over + ["batch.logical=8", "batch.physical=8"])
  accumulated = full.replace(**{"batch.physical": 2})
  rows = pipeline.load_packed_text(full).train_rows[:16]
  batches = [pipeline.as_batch(rows[:8]), pipeline.as_batch(rows[8:])]
  params_full, losses_full, hyper_full = two_steps(full, batches)
  params_acc, losses_acc, hyper_acc = two_steps(accumulated, batches)
  assert hyper_full["lr"] == pytest.approx(full.optim.lr * math.sqrt(2))   # κ = 8/4 from the logical batch
  jax.tree.map(np.testing.assert_array_equal, hyper_full, hyper_acc)
  # fp32 means over 4 micro-batches vs one batch: summation order differs (≈ 20 ulp seen on an AVX-512 host)
  np.testing.assert_allclose(losses_acc, losses_full, rtol=1e-5)
  for after_acc, after_full in zip(params_acc[1:], params_full[1:]):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=0), after_acc, after_full)
  moved = jax.tree.leaves(jax.tree.map(lambda a, b: float(np.abs(a - b).max()), params_full[2], params_full[0]))
  assert min(moved) > 1e-3   # every leaf moved: the 1e-5 agreement is not that of untouched parameters


A_N = jnp.logspace(-1, 1, 64)
QUAD_PARAMS = {"blocks": {0: {"mlp": {"w_up": jnp.ones((8, 8))}}}}


@functools.partial(jax.jit, static_argnums=(1, 2))
def noisy_quadratic_loss(h, steps, batch, sigma=3.0, seeds=128):
  """Mean final loss of ½Σ a_i w_i² under the real optimizer with per-sample gradient noise σ (batch-averaged)."""
  opt = optim.make_optimizer(QUAD_PARAMS)

  def one(key):
    state = {"step": jnp.zeros((), jnp.int32), "params": QUAD_PARAMS, "opt": opt.init(QUAD_PARAMS), "ema": None,
             "hyper": h}

    def body(state, k):
      w_N = state["params"]["blocks"][0]["mlp"]["w_up"].ravel()
      g_N = A_N * w_N + sigma * jax.random.normal(k, w_N.shape) / jnp.sqrt(batch)
      return optim.update(state, {"blocks": {0: {"mlp": {"w_up": g_N.reshape(8, 8)}}}}, opt)[0], None

    state, _ = jax.lax.scan(body, state, jax.random.split(key, steps))
    w_N = state["params"]["blocks"][0]["mlp"]["w_up"].ravel()
    return 0.5 * jnp.sum(A_N * w_N ** 2)

  return jnp.mean(jax.vmap(one)(jax.random.split(jax.random.key(0), seeds)))


def test_physical_batch_chosen_freely_kappa_keeps_the_trajectory():
  """Path 2: train at batch B for a fixed number of samples; with κ the final loss is ~flat in B, without it not."""
  samples = 16 * 256
  losses = {}
  for sde in (True, False):
    for batch in (4, 16, 64):
      cfg = load_config("tiny", [f"sde.enabled={sde}", "sde.base_batch=16", "sde.gamma=0", "optim.lr=1e-2",
                                 "optim.lr_schedule=constant", "optim.warmup=0", "optim.grad_clip=0",
                                 "optim.weight_decay=0", f"batch.logical={batch}", f"batch.physical={batch}",
                                 f"train.steps={samples // batch}"])
      h = optim.hyper_arrays(optim.hyperparams(cfg))
      losses[sde, batch] = float(noisy_quadratic_loss(h, samples // batch, batch))
  spread = lambda sde: max(losses[sde, b] for b in (4, 16, 64)) / min(losses[sde, b] for b in (4, 16, 64))
  print({f"{'kappa' if s else 'fixed'} B={b}": round(v, 3) for (s, b), v in losses.items()})
  assert spread(True) < 1.5 and spread(False) > 5
