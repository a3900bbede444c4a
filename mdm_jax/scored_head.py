"""The final norm, the head and the cross-entropy on the scored rows only: the training loss's fused last op.

Only masked positions carry loss (SUBS, `diffusion`), on average half of the tokens, yet a plain head computes the
logits of every token and the step spends 10 % of its FLOPs (small model) on rows whose loss is zero. This op gathers
the scored rows and runs over them in fixed-size chunks (their count is data-dependent: a device-side loop runs
⌈count / chunk⌉ of them). Under differentiation each chunk also computes its gradient at once (the loss is the last
op of the step), so no [tokens, V] logits or their gradient ever exist, and the backward only scales the gradients
by the loss's cotangent. Model FLOPs (the lab's accounting) still count the head on every token; the FLOPs executed
are lower: benchmarks report both.
"""
import functools

import jax
import jax.numpy as jnp

from mdm_jax import diffusion, ops

CHUNK_ROWS = 256   # 256 / 512 / 1024 ran within noise on small (benchmarks/README.md); smaller wastes less padding


def scored_cross_entropy(h_NxD, scale_D, w_DxV, targets_N, weight_N, scored_N, *, head_mult: float, eps: float,
                         mask_id: int, chunk: int = CHUNK_ROWS):
  """(Σ_scored weight · CE, CE_N) of logits = head_mult · rms_norm(h) @ W, the [MASK] logit at −∞; CE_N is zero at
  rows that are not scored and is not differentiable (it is for metrics). Differentiable w.r.t. h, scale and W."""
  loss, ce_N = _scored_ce(h_NxD, scale_D, w_DxV, targets_N, weight_N, scored_N, head_mult, eps, mask_id, chunk)
  return loss, jax.lax.stop_gradient(ce_N)   # the backward ignores CE_N's cotangent: make that exact


@functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7, 8, 9))
def _scored_ce(h, scale, w, targets, weight, scored, head_mult, eps, mask_id, chunk):
  (loss, ce_N), _ = _chunk_loop(h, scale, w, targets, weight, scored, head_mult, eps, mask_id, chunk, False)
  return loss, ce_N


def _scored_ce_fwd(h, scale, w, targets, weight, scored, head_mult, eps, mask_id, chunk):
  return _chunk_loop(h, scale, w, targets, weight, scored, head_mult, eps, mask_id, chunk, True)   # (out, grads)


def _scored_ce_bwd(head_mult, eps, mask_id, chunk, grads, d_out):
  d_loss, _ = d_out
  d_h, d_scale, d_w = jax.tree.map(lambda g: g * d_loss, grads)
  return d_h, d_scale, d_w, None, None, None


_scored_ce.defvjp(_scored_ce_fwd, _scored_ce_bwd)


def _chunk_loop(h_NxD, scale_D, w_DxV, targets_N, weight_N, scored_N, head_mult, eps, mask_id, chunk, with_grad):
  """((loss, CE_N), (d_h, d_scale, d_w) of the loss or None) over the scored rows, `chunk` rows at a time."""
  n = h_NxD.shape[0]
  chunk = min(chunk, n)
  n_padded = -(-n // chunk) * chunk
  # Scored row indices first; the rest are n (out of range): gathers clip them, scatters drop them.
  rows_P = jnp.nonzero(scored_N, size=n_padded, fill_value=n)[0]
  n_chunks = (jnp.sum(scored_N, dtype=jnp.int32) + chunk - 1) // chunk

  def body(i, carry):
    (loss, ce_N), grads = carry
    rows_R = jax.lax.dynamic_slice_in_dim(rows_P, i * chunk, chunk)
    weight_R = jnp.where(rows_R < n, jnp.take(weight_N, rows_R, mode="clip"), 0.0)
    targets_R = jnp.take(targets_N, rows_R, mode="clip")
    normed_RxD, inv_rms_Rx1 = ops.normalise(jnp.take(h_NxD, rows_R, axis=0, mode="clip"), eps)
    x_RxD = normed_RxD * scale_D
    logits_RxV = head_mult * (x_RxD @ w_DxV)
    ce_R, lse_R = diffusion.ce_and_lse(logits_RxV, targets_R, mask_id)
    loss, ce_N = loss + jnp.sum(weight_R * ce_R), ce_N.at[rows_R].set(ce_R, mode="drop")
    if with_grad:
      d_h, d_scale, d_w = grads
      d_logits_RxV = head_mult * diffusion.ce_gradient(logits_RxV, lse_R, targets_R, weight_R, mask_id)
      d_x_RxD = d_logits_RxV @ w_DxV.T
      d_h_R, d_scale_R = ops.rms_norm_backward(normed_RxD, inv_rms_Rx1, scale_D, d_x_RxD, h_NxD.dtype)
      grads = (d_h.at[rows_R].set(d_h_R, mode="drop"), d_scale + d_scale_R, d_w + x_RxD.T @ d_logits_RxV)
    return (loss, ce_N), grads

  zero = jnp.zeros((), jnp.float32)
  grads = (jnp.zeros_like(h_NxD), jnp.zeros_like(scale_D), jnp.zeros_like(w_DxV)) if with_grad else None
  return jax.lax.fori_loop(0, n_chunks, body, ((zero, jnp.zeros((n,), jnp.float32)), grads))
