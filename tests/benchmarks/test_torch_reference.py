"""The torch reference against numpy and against the plain-JAX probe: same loss, same forward, same step.

This parity is what makes the benchmark honest: both sides do the same work.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

torch = pytest.importorskip("torch", reason="torch is only for the benchmark's reference: pip install torch==2.13.0 (CPU)")

from benchmarks import jax_probe, sizes, torch_reference

TOY = sizes.BenchConfig(d=32, n_layers=2, n_heads=4, ff=64, vocab=50, seq=16, batch=3)


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
  """Toy shapes gain nothing from threads, and spinning OpenMP threads crawl when other work shares the cores."""
  threads = torch.get_num_threads()
  torch.set_num_threads(1)
  yield
  torch.set_num_threads(threads)


def numpy_loss(logits, targets, masked, t, mask_id):
  """The linear-schedule NELBO written out: sum_masked -log softmax(logits with [MASK] = -inf)[target] / t_b / (B*L)."""
  z = np.asarray(logits, np.float64).copy()
  z[..., mask_id] = -np.inf
  z = z - z.max(-1, keepdims=True)
  logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
  b_idx, l_idx = np.meshgrid(np.arange(targets.shape[0]), np.arange(targets.shape[1]), indexing="ij")
  ce = -logp[b_idx, l_idx, targets]
  return float((ce * masked / t[:, None]).sum() / targets.size)


def toy_noise(cfg, seed=0):
  rng = np.random.default_rng(seed)
  tokens = sizes.fixed_batch(cfg, seed)
  t = rng.uniform(0.05, 1.0, cfg.batch).astype(np.float32)
  masked = rng.uniform(size=tokens.shape) < t[:, None]
  masked[:, 0] = True  # at least one masked position per row
  return tokens, t, masked


def test_loss_matches_numpy():
  tokens, t, masked = toy_noise(TOY)
  logits = np.random.default_rng(1).normal(0, 3, (TOY.batch, TOY.seq, TOY.vocab)).astype(np.float32)
  expected = numpy_loss(logits, tokens, masked, t, TOY.mask_id)
  got_torch = torch_reference.masked_diffusion_loss(
      torch.from_numpy(logits), torch.from_numpy(tokens).long(), torch.from_numpy(masked), torch.from_numpy(t),
      TOY.mask_id)
  got_jax = jax_probe.masked_diffusion_loss(jnp.asarray(logits), jnp.asarray(tokens), jnp.asarray(masked),
                                            jnp.asarray(t), TOY.mask_id)
  np.testing.assert_allclose(float(got_torch), expected, rtol=1e-5)
  np.testing.assert_allclose(float(got_jax), expected, rtol=1e-5)


@pytest.mark.parametrize("impl", ["torch", "jax"])
def test_t_is_stratified_in_eps_1(impl):
  n, eps = 64, sizes.SAMPLING_EPS
  if impl == "torch":
    torch.manual_seed(3)
    t = torch_reference.sample_t(n).numpy()
  else:
    t, _ = jax_probe.sample_noise(jax.random.key(3), jnp.zeros((n, 4), jnp.int32))
  cell = np.floor((np.asarray(t, np.float64) - eps) / (1 - eps) * n)
  assert np.all((t >= eps) & (t <= 1.0))
  assert sorted(cell.astype(int).tolist()) == list(range(n))  # one t per stratum, in some rotation


def perturbed_torch_model(cfg):
  """The reference model with random norm scales and head, so that no part of the forward is trivially 0 or 1."""
  torch.manual_seed(0)
  model = torch_reference.Transformer(cfg)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if p.ndim == 1:
        p.uniform_(0.5, 1.5)
    model.head.weight.normal_(0, 0.5)
  return model


def test_forward_loss_and_grads_match_jax_probe():
  model = perturbed_torch_model(TOY)
  params = jax.tree.map(jnp.asarray, torch_reference.export_params(model))
  tokens, t, masked = toy_noise(TOY)
  noisy = np.where(masked, TOY.mask_id, tokens)
  logits_torch = model(torch.from_numpy(noisy).long())
  logits_jax = jax.jit(jax_probe.forward, static_argnums=2)(params, jnp.asarray(noisy), TOY)
  np.testing.assert_allclose(np.asarray(logits_jax), logits_torch.detach().numpy(), atol=1e-5, rtol=1e-5)
  assert float(logits_torch.detach().std()) > 0.1  # a real signal, not zeros

  loss_torch = torch_reference.masked_diffusion_loss(
      logits_torch, torch.from_numpy(tokens).long(), torch.from_numpy(masked), torch.from_numpy(t), TOY.mask_id)
  loss_torch.backward()
  loss_jax, grads_jax = jax.jit(jax.value_and_grad(jax_probe.loss_fn), static_argnums=4)(
      params, jnp.asarray(tokens), jnp.asarray(t), jnp.asarray(masked), TOY)
  np.testing.assert_allclose(float(loss_jax), loss_torch.item(), rtol=1e-5)
  grads_torch = torch_reference.export_params(model, grads=True)
  for (path, g_jax), g_torch in zip(jax.tree_util.tree_leaves_with_path(grads_jax), jax.tree.leaves(grads_torch)):
    np.testing.assert_allclose(np.asarray(g_jax), g_torch, atol=1e-5 * np.abs(g_torch).max(), err_msg=str(path))


def test_optimizer_updates_match_optax():
  """Clip + AdamW, two steps: a clipped large gradient then an unclipped small one (Adam alone is scale-free)."""
  model = perturbed_torch_model(TOY)
  params = jax.tree.map(jnp.asarray, torch_reference.export_params(model))
  update = torch_reference.make_update(list(model.parameters()))
  opt = jax_probe.make_optimizer()
  opt_state = opt.init(params)
  jax_update = jax.jit(lambda g, s, p: (lambda u, s: (optax.apply_updates(p, u), s))(*opt.update(g, s, p)))
  for scale in (1.0, 1e-3):
    for p in model.parameters():
      p.grad = scale * torch.randn_like(p)
    grads = jax.tree.map(jnp.asarray, torch_reference.export_params(model, grads=True))
    assert (float(optax.tree.norm(grads)) > sizes.CLIP_NORM) == (scale == 1.0)
    update()
    params, opt_state = jax_update(grads, opt_state, params)
  got = torch_reference.export_params(model)
  for (path, e), g in zip(jax.tree_util.tree_leaves_with_path(params), jax.tree.leaves(got)):
    np.testing.assert_allclose(g, np.asarray(e), atol=1e-7, rtol=1e-6, err_msg=str(path))
