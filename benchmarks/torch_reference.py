"""Plain PyTorch reference of the lab's model, masked-diffusion loss and AdamW step (the benchmark's yardstick).

Model: bidirectional pre-norm transformer; RMSNorm (eps 1e-6, learned scale); separate bias-free q, k, v, o;
QK-norm (RMSNorm over the head dim, then RoPE, rotate-half, theta 1e4); scale 1/sqrt(head_dim); non-causal softmax
attention; SwiGLU MLP silu(gate)*up -> down; final RMSNorm; untied zero-initialised head; no position embedding.
Init: embedding and hidden weights normal(0, 0.02), norm scales 1, head 0.
Loss (linear schedule): per sequence t ~ antithetic stratified in [eps, 1]; each position masked with prob t and fed
the [MASK] id (vocab-1); the [MASK] logit is -inf; loss = sum over masked positions of CE/t_b, divided by B*L.
Optimizer: AdamW (lr 3e-4, betas .9/.95, wd 0.1 on every parameter, eps 1e-8) after global-norm clipping at 1.0.
Each op is PyTorch's own fastest standard one (F.rms_norm, scaled_dot_product_attention, fused AdamW), so the
reference is as strong as plain PyTorch gets.
"""

import os

import torch
from torch import nn
import torch.nn.functional as F

from benchmarks import sizes


def rope_tables(seq: int, head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
  """cos, sin of shape [seq, head_dim] for the rotate-half convention (first half pairs with second half)."""
  inv_freq = sizes.ROPE_THETA ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
  angles = torch.arange(seq, dtype=torch.float64)[:, None] * inv_freq[None, :]
  angles = torch.cat([angles, angles], dim=-1)
  return angles.cos().float(), angles.sin().float()


def apply_rope(x_BxHxLxD: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
  x1, x2 = x_BxHxLxD.chunk(2, dim=-1)
  return x_BxHxLxD * cos + torch.cat([-x2, x1], dim=-1) * sin


class RMSNorm(nn.Module):

  def __init__(self, dim: int):
    super().__init__()
    self.scale = nn.Parameter(torch.ones(dim))

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return F.rms_norm(x, (x.shape[-1],), self.scale, sizes.NORM_EPS)


class Block(nn.Module):

  def __init__(self, cfg: sizes.BenchConfig):
    super().__init__()
    d, f, dh = cfg.d, cfg.ff, cfg.head_dim
    self.n_heads = cfg.n_heads
    self.attn_norm, self.mlp_norm = RMSNorm(d), RMSNorm(d)
    self.q, self.k, self.v, self.o = (nn.Linear(d, d, bias=False) for _ in range(4))
    self.q_norm, self.k_norm = RMSNorm(dh), RMSNorm(dh)
    self.gate, self.up = nn.Linear(d, f, bias=False), nn.Linear(d, f, bias=False)
    self.down = nn.Linear(f, d, bias=False)

  def forward(self, x_BxLxD: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    b, l, d = x_BxLxD.shape
    h = self.attn_norm(x_BxLxD)

    def heads(proj, norm):
      return norm(proj(h).view(b, l, self.n_heads, d // self.n_heads)).transpose(1, 2)

    q = apply_rope(heads(self.q, self.q_norm), cos, sin)
    k = apply_rope(heads(self.k, self.k_norm), cos, sin)
    v = self.v(h).view(b, l, self.n_heads, d // self.n_heads).transpose(1, 2)
    attn = F.scaled_dot_product_attention(q, k, v, is_causal=False)  # default scale is 1/sqrt(head_dim)
    x_BxLxD = x_BxLxD + self.o(attn.transpose(1, 2).reshape(b, l, d))
    h = self.mlp_norm(x_BxLxD)
    return x_BxLxD + self.down(F.silu(self.gate(h)) * self.up(h))


class Transformer(nn.Module):

  def __init__(self, cfg: sizes.BenchConfig):
    super().__init__()
    self.embed = nn.Embedding(cfg.vocab, cfg.d)
    self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
    self.final_norm = RMSNorm(cfg.d)
    self.head = nn.Linear(cfg.d, cfg.vocab, bias=False)
    for name, p in self.named_parameters():
      if name == "head.weight":
        nn.init.zeros_(p)
      elif p.ndim == 2:
        nn.init.normal_(p, std=sizes.INIT_STD)
    cos, sin = rope_tables(cfg.seq, cfg.head_dim)
    self.register_buffer("cos", cos, persistent=False)
    self.register_buffer("sin", sin, persistent=False)

  def forward(self, tokens_BxL: torch.Tensor) -> torch.Tensor:
    x = self.embed(tokens_BxL)
    for block in self.blocks:
      x = block(x, self.cos, self.sin)
    return self.head(self.final_norm(x))


def masked_diffusion_loss(logits_BxLxV: torch.Tensor, targets_BxL: torch.Tensor, masked_BxL: torch.Tensor,
                          t_B: torch.Tensor, mask_id: int) -> torch.Tensor:
  """sum_{masked} CE(logits with [MASK] at -inf, target) / t_b, divided by B*L (linear schedule, w(t) = 1/t)."""
  logits = logits_BxLxV.index_fill(-1, torch.tensor([mask_id]), float("-inf"))
  ce_BxL = F.cross_entropy(logits.flatten(0, 1), targets_BxL.flatten(), reduction="none").view_as(targets_BxL)
  weighted = torch.where(masked_BxL, ce_BxL, 0.0) / t_B[:, None]
  return weighted.sum() / targets_BxL.numel()


def sample_t(batch: int) -> torch.Tensor:
  """Antithetic stratified t: one jittered point per cell of [0, 1), mapped into [eps, 1]."""
  e = (torch.rand(batch) / batch + torch.arange(batch) / batch) % 1.0
  return (1.0 - sizes.SAMPLING_EPS) * e + sizes.SAMPLING_EPS


def noised_loss(model: Transformer, tokens_BxL: torch.Tensor, mask_id: int) -> torch.Tensor:
  """Draws t and the mask, feeds [MASK] at masked positions and returns the loss."""
  t_B = sample_t(tokens_BxL.shape[0])
  masked_BxL = torch.rand(tokens_BxL.shape) < t_B[:, None]
  noisy_BxL = torch.where(masked_BxL, mask_id, tokens_BxL)
  return masked_diffusion_loss(model(noisy_BxL), tokens_BxL, masked_BxL, t_B, mask_id)


def make_update(params: list[torch.Tensor]):
  """The optimizer update (global-norm clip, then AdamW on every parameter) as a callable; `.optimizer` holds it."""
  opt = torch.optim.AdamW(params, lr=sizes.LR, betas=(sizes.BETA1, sizes.BETA2), eps=sizes.ADAM_EPS,
                          weight_decay=sizes.WEIGHT_DECAY, fused=True)

  def update():
    torch.nn.utils.clip_grad_norm_(params, sizes.CLIP_NORM)
    opt.step()

  update.optimizer = opt
  return update


def make_torch_step(cfg: sizes.BenchConfig, compile: bool, seed: int = 0):
  """A callable running one full train step (noise, forward, backward, clip, AdamW) on a fixed batch.

  With `compile`, the loss and its backward go through torch.compile (inductor) and so does the optimizer update.
  The step's first calls compile; warm it up before timing.
  """
  torch.set_num_threads(os.cpu_count() or 1)
  torch.manual_seed(seed)
  model = Transformer(cfg)
  update = make_update(list(model.parameters()))
  tokens = torch.from_numpy(sizes.fixed_batch(cfg, seed)).long()
  loss_fn = torch.compile(noised_loss) if compile else noised_loss
  update_fn = torch.compile(update) if compile else update
  opt = update.optimizer

  def step() -> torch.Tensor:
    opt.zero_grad(set_to_none=True)
    loss = loss_fn(model, tokens, cfg.mask_id)
    loss.backward()
    update_fn()
    return loss

  return step


def make_bench_step(name_or_dims, batch: int | None = None, seq: int | None = None, compile: bool = False):
  """make_torch_step under the harness contract (benchmarks/train_step.py): (step_fn, state), state = step_fn(state)."""
  step = make_torch_step(sizes.resolve(name_or_dims, batch, seq), compile)

  def step_fn(state):
    step()  # CPU ops are synchronous: the step is done when this returns
    return state

  return step_fn, None


def export_params(model: Transformer, grads: bool = False) -> dict:
  """Weights (or with `grads`, their gradients) as numpy in the jax-probe layout: matrices [in, out]."""
  np_ = lambda p: (p.grad if grads else p).detach().cpu().numpy().copy()
  layers = [{
      "attn_norm": np_(b.attn_norm.scale), "mlp_norm": np_(b.mlp_norm.scale),
      "q_norm": np_(b.q_norm.scale), "k_norm": np_(b.k_norm.scale),
      **{n: np_(getattr(b, n).weight).T for n in ("q", "k", "v", "o", "gate", "up", "down")},
  } for b in model.blocks]
  return {"embed": np_(model.embed.weight), "layers": layers, "final_norm": np_(model.final_norm.scale),
          "head": np_(model.head.weight).T}
