"""mdm_jax.scored_head: the head and CE on scored rows only, against the full head with plain autodiff."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mdm_jax import diffusion, optim, scored_head, sharding, step
from mdm_jax.config import load_config

N, D, V, MASK_ID, HEAD_MULT, EPS = 300, 16, 40, 39, 1.7, 1e-6


def _inputs(scored_fraction: float, seed: int = 0):
  k = jax.random.split(jax.random.key(seed), 6)
  h = jax.random.normal(k[0], (N, D))
  scale = 1.0 + 0.1 * jax.random.normal(k[1], (D,))
  w = 0.3 * jax.random.normal(k[2], (D, V))
  targets = jax.random.randint(k[3], (N,), 0, MASK_ID)
  scored = jax.random.uniform(k[4], (N,)) < scored_fraction
  weight = jnp.where(scored, 1.0 + jax.random.uniform(k[5], (N,)), 0.0)
  return (h, scale, w), (targets, weight, scored)


def full_head(h, scale, w, targets, weight, scored):
  """The plain formula: logits of every row, the [MASK] logit at −∞, autodiff everywhere."""
  logits = HEAD_MULT * (h / jnp.sqrt(jnp.mean(h * h, axis=-1, keepdims=True) + EPS) * scale) @ w
  logits = logits.at[:, MASK_ID].set(-jnp.inf)
  ce = -jnp.take_along_axis(jax.nn.log_softmax(logits), targets[:, None], axis=-1)[:, 0]
  return jnp.sum(jnp.where(scored, weight * ce, 0.0)), jnp.where(scored, ce, 0.0)


def fast_head(h, scale, w, targets, weight, scored, chunk):
  return scored_head.scored_cross_entropy(h, scale, w, targets, weight, scored, head_mult=HEAD_MULT, eps=EPS,
                                          mask_id=MASK_ID, chunk=chunk)


@pytest.mark.parametrize("scored_fraction, chunk", [(0.5, 64), (0.5, 7), (1.0, 100), (0.5, 1000), (0.0, 64)])
def test_loss_ce_and_gradients_equal_the_full_head(scored_fraction, chunk):
  """Chunks that do and do not divide the rows, every row scored, one chunk larger than all rows, none scored."""
  params, data = _inputs(scored_fraction)
  (loss, ce), grads = jax.value_and_grad(lambda *p: fast_head(*p, *data, chunk), argnums=(0, 1, 2),
                                         has_aux=True)(*params)
  (ref_loss, ref_ce), ref_grads = jax.value_and_grad(lambda *p: full_head(*p, *data), argnums=(0, 1, 2),
                                                     has_aux=True)(*params)
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
  np.testing.assert_allclose(ce, ref_ce, rtol=1e-5, atol=1e-5)
  for g, ref in zip(grads, ref_grads):
    np.testing.assert_allclose(g, ref, rtol=1e-4, atol=1e-6 * float(jnp.max(jnp.abs(ref)) + 1e-30))
  assert scored_fraction == 0.0 or float(jnp.max(jnp.abs(grads[2]))) > 0   # the test has something to compare


def test_undifferentiated_call_and_cotangent_scaling():
  """Without differentiation the op skips the gradient work and gives the same values; under grad of 3·loss the
  saved gradients are scaled by the cotangent."""
  params, data = _inputs(0.4)
  np.testing.assert_allclose(jax.jit(fast_head, static_argnums=6)(*params, *data, 32)[0],
                             full_head(*params, *data)[0], rtol=1e-5)
  grads = jax.grad(lambda w: 3.0 * fast_head(params[0], params[1], w, *data, 32)[0])(params[2])
  ref = jax.grad(lambda w: 3.0 * full_head(params[0], params[1], w, *data)[0])(params[2])
  np.testing.assert_allclose(grads, ref, rtol=1e-4, atol=1e-6 * float(jnp.max(jnp.abs(ref))))


def test_vmapped_members_with_different_scored_counts_equal_one_by_one():
  """Groups of runs vmap the step: members run different numbers of chunks in one loop."""
  members = [_inputs(fraction, seed) for seed, fraction in enumerate((0.1, 0.9))]
  stacked = jax.tree.map(lambda *x: jnp.stack(x), *members)

  def loss_and_grad(params, data):
    return jax.value_and_grad(lambda p: fast_head(*p, *data, 32)[0])(params)

  batched = jax.vmap(loss_and_grad)(*stacked)
  for i, (params, data) in enumerate(members):
    jax.tree.map(lambda b, one: np.testing.assert_allclose(b[i], one, rtol=1e-5, atol=1e-7), batched,
                 loss_and_grad(params, data))


def test_train_step_with_the_scored_head_equals_the_full_head():
  """Two train steps of the real program from the same state: metrics and parameters agree."""
  cfg = load_config("tiny", ["batch.logical=4", "batch.physical=4", "data.seq_len=64"])
  mesh = sharding.make_mesh(cfg.mesh, jax.devices()[:1])
  rng = np.random.default_rng(0)
  shape = (1, 4, 64)
  batch = {"tokens": rng.integers(0, 200, shape).astype(np.int32), "loss_mask": rng.random(shape) < 0.9,
           "modality": np.zeros(shape, np.int32)}
  results = []
  for scored in (True, False):
    steps = step.build(cfg, mesh, scored_head=scored)
    state = steps.init(step.seed_key(0), optim.hyper_arrays(optim.hyperparams(cfg)))
    for _ in range(2):
      state, metrics = steps.train(state, batch)
    results.append((metrics, state["params"]))
  (metrics, params), (ref_metrics, ref_params) = results
  for key in ("train/loss", "train/nelbo_sum_by_modality", "optim/grad_norm"):
    np.testing.assert_allclose(metrics[key], ref_metrics[key], rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), params, ref_params)


def test_scored_weight_is_the_time_weight_on_scored_positions_only():
  cfg = load_config("tiny").diffusion
  masked = jnp.array([[True, True, False], [False, True, True]])
  loss_mask = jnp.array([[True, False, True], [True, True, True]])
  scored, weight = diffusion.scored_weight(masked, jnp.array([0.5, 0.25]), loss_mask, cfg)
  np.testing.assert_array_equal(scored, [[True, False, False], [False, True, True]])
  np.testing.assert_allclose(weight, [[1 / 0.5, 0, 0], [0, 1 / 0.25, 1 / 0.25]])   # linear: w(t) = 1/t
