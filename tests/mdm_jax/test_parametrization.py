"""CompleteP / SP multipliers against a hand computation, through the config, the model init and the optimizer."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mdm_jax import model, optim, parametrization
from mdm_jax.config import ConfigError, load_config

SIGMA, LR, EPS, WD = 0.02, 1e-2, 1e-8, 0.1
BASE = ["param.base_width=64", "param.base_depth=2", f"model.init_std={SIGMA}", f"optim.lr={LR}",
        f"optim.eps={EPS}", f"optim.weight_decay={WD}", "optim.warmup=0", "optim.lr_schedule=constant",
        "optim.grad_clip=0", "model.d_ff=128", "data.seq_len=32", "batch.logical=4", "batch.physical=4", "train.steps=10"]

# Worked by hand from the table in mdm_jax/parametrization.py with base (d=64, L=2), σ=0.02, η=1e-2, ε=1e-8, λ=0.1:
# m_d = d/64, m_L = L/2. Columns: hidden (init std, LR, ε, WD), norm (LR, ε), ε of embed/final_norm/head, residual,
# head multiplier.
HAND = {
    (64, 2, 1.0): (0.02, 1e-2, 1e-8, 0.1, 1e-2, 1e-8, 1e-8, 1.0, 1.0),
    (256, 2, 1.0): (0.01, 2.5e-3, 2.5e-9, 0.4, 1e-2, 2.5e-9, 2.5e-9, 1.0, 0.25),
    (64, 8, 1.0): (0.02, 1e-2, 2.5e-9, 0.1, 1e-2, 2.5e-9, 1e-8, 0.25, 1.0),
    (256, 8, 1.0): (0.01, 2.5e-3, 6.25e-10, 0.4, 1e-2, 6.25e-10, 2.5e-9, 0.25, 0.25),
    (64, 8, 0.5): (0.02, 5e-3, 5e-9, 0.1, 5e-3, 5e-9, 1e-8, 0.5, 1.0),
    (256, 8, 0.5): (0.01, 1.25e-3, 1.25e-9, 0.4, 5e-3, 1.25e-9, 2.5e-9, 0.5, 0.25),
    (256, 2, 0.5): (0.01, 2.5e-3, 2.5e-9, 0.4, 1e-2, 2.5e-9, 2.5e-9, 1.0, 0.25),
}


def completep(width, depth, alpha, *extra):
  heads = width // 16
  return load_config("tiny", BASE + ["param.parametrization=completep", f"param.alpha={alpha}",
                                     f"model.d_model={width}", f"model.n_layers={depth}", f"model.n_heads={heads}",
                                     *extra])


def expected_groups(hand):
  h_init, h_lr, h_eps, h_wd, n_lr, n_eps, out_eps, _, _ = hand
  return {"embed": (SIGMA, LR, out_eps, WD), "hidden": (h_init, h_lr, h_eps, h_wd), "norm": (None, n_lr, n_eps, 0.0),
          "final_norm": (None, LR, out_eps, 0.0), "head": (0.0, LR, out_eps, WD)}


@pytest.mark.parametrize("width, depth, alpha", sorted(HAND))
def test_resolved_groups_match_the_hand_table(width, depth, alpha):
  cfg = completep(width, depth, alpha)
  res = parametrization.resolved(cfg)
  for group, values in expected_groups(HAND[(width, depth, alpha)]).items():
    got = res["groups"][group]
    assert got["init_std"] == (None if values[0] is None else pytest.approx(values[0], rel=1e-12)), group
    assert (got["lr"], got["eps"], got["weight_decay"]) == pytest.approx(values[1:], rel=1e-12), group
  assert res["forward"] == pytest.approx({"residual": HAND[(width, depth, alpha)][7],
                                          "head": HAND[(width, depth, alpha)][8], "embed": 1.0})
  assert res["modules"] == {}


def first_step_updates(cfg, params, grad_value):
  """Updates of the real optimizer for constant gradients `grad_value(module)` at step 1 with these params."""
  hyper = optim.hyper_arrays(optim.hyperparams(cfg))
  opt = optim.make_optimizer(params)
  modules = optim.module_tree(params)
  grads = jax.tree.map(lambda p, m: jnp.full(p.shape, grad_value(m), jnp.float32), params, modules)
  updates, _ = opt.update(grads, opt.init(params), params, hyper=hyper, schedule=jnp.float32(1.0))
  return updates, modules


@pytest.mark.parametrize("width, depth, alpha", [(64, 2, 1.0), (256, 8, 0.5), (256, 2, 1.0), (64, 8, 1.0)])
def test_model_and_optimizer_apply_the_hand_table(width, depth, alpha):
  cfg = completep(width, depth, alpha)
  hand = HAND[(width, depth, alpha)]
  groups = expected_groups(hand)
  graphdef, params = model.init(cfg.model, cfg.vocab_size, jax.random.key(0), parametrization.multipliers(cfg))
  net = nnx.merge(graphdef, params)
  assert net.blocks[0].residual == pytest.approx(hand[7]) and net.head_mult == pytest.approx(hand[8])
  assert float(jnp.std(params["embed"])) == pytest.approx(SIGMA, rel=0.03)
  assert float(jnp.std(params["blocks"][0]["mlp"]["w_down"])) == pytest.approx(hand[0], rel=0.03)
  assert float(jnp.std(params["blocks"][depth - 1]["attn"]["wq"])) == pytest.approx(hand[0], rel=0.05)
  assert not params["head"].any() and bool((params["final_norm"]["scale"] == 1).all())

  group = lambda m: parametrization.MODULE_GROUP[m]
  # |g| >> ε: the Adam direction is ±1, so at θ = 0 the update is −η_group and at θ = 1 it is −η(1 + λ).
  zeros, ones = jax.tree.map(jnp.zeros_like, params), jax.tree.map(jnp.ones_like, params)
  at_zero, modules = first_step_updates(cfg, zeros, lambda m: 1.0)
  at_one, _ = first_step_updates(cfg, ones, lambda m: 1.0)
  # |g| = ε_group: the Adam direction is g/(|g| + ε) = 1/2 exactly when the optimizer uses that ε.
  at_eps, _ = first_step_updates(cfg, zeros, lambda m: groups[group(m)][2])
  leaves = zip(jax.tree.leaves(modules), *(jax.tree.leaves(t) for t in (at_zero, at_one, at_eps)))
  for m, u_zero, u_one, u_eps in leaves:
    _, lr, _, wd = groups[group(m)]
    np.testing.assert_allclose(-np.asarray(u_zero), lr, rtol=1e-5, err_msg=f"{m} lr")
    np.testing.assert_allclose(-np.asarray(u_one), lr * (1 + wd), rtol=1e-5, err_msg=f"{m} wd")
    np.testing.assert_allclose(-np.asarray(u_eps), lr / 2, rtol=1e-4, err_msg=f"{m} eps")


def test_sp_keeps_every_multiplier_at_one():
  for width in (64, 256):
    cfg = load_config("tiny", BASE + [f"model.d_model={width}", "model.n_layers=8"])
    res = parametrization.resolved(cfg)
    for group, (init, lr, eps, wd) in {"embed": (SIGMA, LR, EPS, WD), "hidden": (SIGMA, LR, EPS, WD),
                                       "norm": (None, LR, EPS, 0.0), "head": (0.0, LR, EPS, WD)}.items():
      got = res["groups"][group]
      assert (got["init_std"], got["lr"], got["eps"], got["weight_decay"]) == (init, lr, eps, wd)
    assert res["forward"] == {"residual": 1.0, "head": 1.0, "embed": 1.0}
    assert parametrization.multipliers(cfg) == model.Multipliers(init_std_hidden=SIGMA, init_std_embed=SIGMA)


def test_per_module_extras_multiply_group_and_module_factors():
  cfg = completep(256, 2, 1.0, "param.extra=[hidden.lr=2, wo.lr=0.5, w_down.init=0.5, head.eps=3, embed.wd=0]")
  res = parametrization.resolved(cfg)
  assert res["groups"]["hidden"]["lr"] == pytest.approx(2 * 2.5e-3)
  assert res["modules"]["wo"]["lr"] == pytest.approx(2.5e-3)            # 2 (group) × 0.5 (module)
  assert res["modules"]["w_down"]["init_std"] == pytest.approx(0.005)
  assert res["groups"]["head"]["eps"] == pytest.approx(3 * 2.5e-9)
  assert res["groups"]["embed"]["weight_decay"] == 0.0
  assert set(res["modules"]) == {"wo", "w_down"}
  mult = parametrization.multipliers(cfg)
  assert mult.init_std("w_down") == pytest.approx(0.005) and mult.init_std("wq") == pytest.approx(0.01)
  _, params = model.init(cfg.model, cfg.vocab_size, jax.random.key(1), mult)
  assert float(jnp.std(params["blocks"][0]["mlp"]["w_down"])) == pytest.approx(0.005, rel=0.03)


def test_decoupled_weight_decay_folds_the_lr_factor():
  cfg = completep(256, 8, 0.5, "optim.weight_decay_convention=decoupled")
  f = parametrization.group_factors(cfg)
  assert f["hidden"]["wd"] == pytest.approx(4 * (1 / 4) * 4 ** -0.5)   # m_d × (m_L^(α−1)/m_d)
  assert f["embed"]["wd"] == 1.0 and f["norm"]["wd"] == 0.0


@pytest.mark.parametrize("override, needle", [
    (["param.parametrization=completep", "param.base_width=0"], "param.base_width"),
    (["param.alpha=0.7"], "param.alpha"),
    (["param.parametrization=mup"], "param.parametrization"),
    (["param.extra=[wq.speed=2]"], "param.extra"),
    (["param.extra=[wq.lr=-1]"], "param.extra"),
    (["param.extra=[head.init=2]"], "param.extra"),
    (["param.extra=[wq.lr=2, wq.lr=3]"], "param.extra"),
    (["sde.enabled=true", "sde.base_tokens=0"], "sde.base_tokens"),
    (["optim.weight_decay_convention=adamw"], "optim.weight_decay_convention"),
])
def test_bad_parametrization_input_names_the_field(override, needle):
  with pytest.raises(ConfigError) as e:
    load_config("tiny", ["param.base_depth=2"] + override)
  assert e.value.field == needle


def test_every_model_parameter_has_a_group():
  cfg = completep(64, 2, 1.0)
  _, params = model.init(cfg.model, cfg.vocab_size, jax.random.key(0))
  names = jax.tree.leaves(optim.module_tree(params))
  assert set(names) == set(parametrization.MODULES)


def test_kappa_formula_and_horizon():
  cfg = load_config("tiny", ["sde.enabled=true", "sde.base_batch=16", "sde.base_tokens=1000000", "sde.gamma=0.5",
                             "batch.logical=64", "batch.physical=16", "data.seq_len=128", "train.steps=0", "train.tokens=4000000"])
  d = parametrization.token_horizon(cfg)
  assert d == math.ceil(4_000_000 / (64 * 128)) * 64 * 128
  assert parametrization.kappa(cfg) == pytest.approx(4 * (1e6 / d) ** 0.5)
  assert parametrization.kappa(cfg.replace(**{"sde.enabled": False})) == 1.0
