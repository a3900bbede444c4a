"""A straightforward plain-JAX implementation of the benchmark model, loss and AdamW step (impl "jax-probe").

The same model and objective as benchmarks/torch_reference.py (see its docstring), written the obvious way:
a nested dict of parameters, [B, L, d] activations, einsum attention, one `jax.jit` over the whole step with the
parameters and optimizer state donated, optax AdamW after global-norm clipping. It validates the harness before
the lab's own step (mdm_jax.bench) exists and is the plain-JAX baseline for the performance work.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks import sizes


def init_params(cfg: sizes.BenchConfig, key: jax.Array) -> dict:
  """normal(0, 0.02) embedding and hidden matrices ([in, out]), unit norm scales, zero head."""
  d, f, dh = cfg.d, cfg.ff, cfg.head_dim
  normal = lambda k, shape: sizes.INIT_STD * jax.random.normal(k, shape, jnp.float32)
  shapes = {"q": (d, d), "k": (d, d), "v": (d, d), "o": (d, d), "gate": (d, f), "up": (d, f), "down": (f, d)}
  key, embed_key = jax.random.split(key)
  layers = []
  for layer_key in jax.random.split(key, cfg.n_layers):
    keys = dict(zip(shapes, jax.random.split(layer_key, len(shapes))))
    layer = {n: normal(keys[n], s) for n, s in shapes.items()}
    layer.update(attn_norm=jnp.ones(d), mlp_norm=jnp.ones(d), q_norm=jnp.ones(dh), k_norm=jnp.ones(dh))
    layers.append(layer)
  return {"embed": normal(embed_key, (cfg.vocab, d)), "layers": layers, "final_norm": jnp.ones(d),
          "head": jnp.zeros((d, cfg.vocab))}


def rms_norm(x: jax.Array, scale: jax.Array) -> jax.Array:
  return x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + sizes.NORM_EPS) * scale


def rope_tables(seq: int, head_dim: int) -> tuple[np.ndarray, np.ndarray]:
  """cos, sin [seq, head_dim], rotate-half convention, computed in float64 like the torch reference."""
  inv_freq = sizes.ROPE_THETA ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
  angles = np.arange(seq, dtype=np.float64)[:, None] * inv_freq[None, :]
  angles = np.concatenate([angles, angles], axis=-1)
  return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


def apply_rope(x_BxLxHxD: jax.Array, cos: np.ndarray, sin: np.ndarray) -> jax.Array:
  x1, x2 = jnp.split(x_BxLxHxD, 2, axis=-1)
  return x_BxLxHxD * cos[:, None, :] + jnp.concatenate([-x2, x1], axis=-1) * sin[:, None, :]


def forward(params: dict, tokens_BxL: jax.Array, cfg: sizes.BenchConfig) -> jax.Array:
  """Logits [B, L, V]."""
  b, l = tokens_BxL.shape
  cos, sin = rope_tables(l, cfg.head_dim)
  x = params["embed"][tokens_BxL]
  for p in params["layers"]:
    h = rms_norm(x, p["attn_norm"])
    split = lambda y: y.reshape(b, l, cfg.n_heads, cfg.head_dim)
    q = apply_rope(rms_norm(split(h @ p["q"]), p["q_norm"]), cos, sin)
    k = apply_rope(rms_norm(split(h @ p["k"]), p["k_norm"]), cos, sin)
    v = split(h @ p["v"])
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(cfg.head_dim).astype(np.float32)
    attn = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(scores, axis=-1), v)
    x = x + attn.reshape(b, l, cfg.d) @ p["o"]
    h = rms_norm(x, p["mlp_norm"])
    x = x + (jax.nn.silu(h @ p["gate"]) * (h @ p["up"])) @ p["down"]
  return rms_norm(x, params["final_norm"]) @ params["head"]


def masked_diffusion_loss(logits_BxLxV: jax.Array, targets_BxL: jax.Array, masked_BxL: jax.Array, t_B: jax.Array,
                          mask_id: int) -> jax.Array:
  """sum_{masked} CE / t_b over B*L tokens, [MASK] logit at -inf; CE by a gather, no one-hot."""
  logits = logits_BxLxV.at[..., mask_id].set(-jnp.inf)
  logz_BxL = jax.nn.logsumexp(logits, axis=-1)
  target_logit_BxL = jnp.take_along_axis(logits, targets_BxL[..., None], axis=-1)[..., 0]
  ce_BxL = jnp.where(masked_BxL, logz_BxL - target_logit_BxL, 0.0)
  return jnp.sum(ce_BxL / t_B[:, None]) / targets_BxL.size


def sample_noise(key: jax.Array, tokens_BxL: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Antithetic stratified t in [eps, 1] and the Bernoulli(t_b) mask."""
  b = tokens_BxL.shape[0]
  t_key, mask_key = jax.random.split(key)
  e = (jax.random.uniform(t_key, (b,)) / b + jnp.arange(b) / b) % 1.0
  t_B = (1.0 - sizes.SAMPLING_EPS) * e + sizes.SAMPLING_EPS
  return t_B, jax.random.uniform(mask_key, tokens_BxL.shape) < t_B[:, None]


def loss_fn(params: dict, tokens_BxL: jax.Array, t_B: jax.Array, masked_BxL: jax.Array,
            cfg: sizes.BenchConfig) -> jax.Array:
  noisy_BxL = jnp.where(masked_BxL, cfg.mask_id, tokens_BxL)
  return masked_diffusion_loss(forward(params, noisy_BxL, cfg), tokens_BxL, masked_BxL, t_B, cfg.mask_id)


def make_optimizer() -> optax.GradientTransformation:
  return optax.chain(
      optax.clip_by_global_norm(sizes.CLIP_NORM),
      optax.adamw(sizes.LR, b1=sizes.BETA1, b2=sizes.BETA2, eps=sizes.ADAM_EPS, weight_decay=sizes.WEIGHT_DECAY))


def make_step(name_or_dims, batch: int | None = None, seq: int | None = None, seed: int = 0):
  """The mdm_jax.bench contract (see benchmarks/train_step.py): returns (step_fn, state), state = step_fn(state)."""
  cfg = sizes.resolve(name_or_dims, batch, seq)
  tokens_BxL = jnp.asarray(sizes.fixed_batch(cfg, seed))
  optimizer = make_optimizer()
  params = init_params(cfg, jax.random.key(seed))

  def train_step(params, opt_state, key):
    key, noise_key = jax.random.split(key)
    t_B, masked_BxL = sample_noise(noise_key, tokens_BxL)
    loss, grads = jax.value_and_grad(loss_fn)(params, tokens_BxL, t_B, masked_BxL, cfg)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, key, loss

  train_step = jax.jit(train_step, donate_argnums=(0, 1))

  def step_fn(state):
    return jax.block_until_ready(train_step(*state[:3]))

  return step_fn, (params, optimizer.init(params), jax.random.key(seed + 1), jnp.zeros(()))
