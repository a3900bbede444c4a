"""Coordinate check: per-layer activation and update RMS across widths after a few real training steps.

The μP/CompleteP test of a parametrisation (Yang et al.; Dey et al. §5): train the same model family at widths
64…1024 for a fixed number of steps with the same base hyper-parameters and measure, on one fixed masked input,
the RMS of the residual stream after the embedding and after each block, and of the logits ("activation"), and the
RMS of their change since initialisation ("update"). Under CompleteP the curves are flat in width; under SP (fixed
init std and LR) they drift. Heads keep a fixed head dim, d_ff = 4·d, gradient clipping is off (it would hide the
drift), and the depth is the base depth, so only width varies. As in the μP coordinate check, the RMS is averaged
over a few initialisation seeds (trained side by side in the same program): one seed's small-width trajectory is
noisy enough to move a layer's RMS by ~2× at widths 64–128.

  python -m mdm_jax.coord_check --out labs/transfer/figures   # coord_check.json + coord_check.png/.pdf
"""
import argparse
import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mdm_jax import diffusion, model, optim, parametrization, runio, step
from mdm_jax.config import Config, load_config
from mdm_jax.data import pipeline

WIDTHS = (64, 128, 256, 512, 1024)
PARAMETRIZATIONS = ("sp", "completep")
_FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}   # a few steps only


def config_for(parametrization: str, width: int, *, depth: int = 2, base_width: int = 64, head_dim: int = 16,
               seq_len: int = 32, batch: int = 4, steps: int = 4, lr: float = 1e-2, seed: int = 0,
               overrides=()) -> Config:
  return load_config("tiny", [
      f"model.d_model={width}", f"model.n_heads={width // head_dim}", f"model.d_ff={4 * width}",
      f"model.n_layers={depth}", f"data.seq_len={seq_len}", f"batch.logical={batch}", f"batch.physical={batch}",
      f"train.steps={steps}", f"optim.lr={lr}", "optim.warmup=0", "optim.lr_schedule=constant", "optim.grad_clip=0",
      f"param.parametrization={parametrization}", f"param.base_width={base_width}", f"param.base_depth={depth}",
      f"train.seed={seed}", *overrides])


def merged(graphdef, params, forward_mults: dict | None = None):
  """The model, with its compiled-in forward multipliers replaced by (possibly traced) values when given, so that
  parametrisations differing only in values run as one vmapped program."""
  net = nnx.merge(graphdef, params)
  if forward_mults is not None:
    targets = [(net, "embed_mult", "embed"), (net, "head_mult", "head")]
    targets += [(block, "residual", "residual") for block in net.blocks]
    for module, attr, key in targets:
      if not hasattr(module, attr):   # model.py renamed it: overriding would silently do nothing
        raise AttributeError(f"{type(module).__name__} has no forward multiplier {attr!r}; update coord_check")
      setattr(module, attr, forward_mults[key])
  return net


def layer_activations(graphdef, params, tokens_BxL, forward_mults: dict | None = None):
  """{layer: activation} for the embedding output, each block output and the logits, via the model's own modules."""
  net = merged(graphdef, params, forward_mults)
  h_BxLxD = jnp.take(net.embed[...], tokens_BxL, axis=0) * net.embed_mult
  out = {"embed": h_BxLxD}
  for i, block in enumerate(net.blocks):
    h_BxLxD = block(h_BxLxD)
    out[f"block{i}"] = h_BxLxD
  out["logits"] = (net.final_norm(h_BxLxD) @ net.head[...]) * net.head_mult
  return out


def _rms(x):
  return jnp.sqrt(jnp.mean(jnp.square(x.astype(jnp.float32))))


def probe_tokens(cfg: Config, rows_BxL: np.ndarray) -> jax.Array:
  """A fixed masked input: validation rows corrupted at t = 0.5 with fixed noise."""
  u_BxL = np.random.default_rng(step.EVAL_KEY).uniform(size=rows_BxL.shape)
  t_B = jnp.full((rows_BxL.shape[0],), 0.5)
  z_BxL, _ = diffusion.corrupt(u_BxL, jnp.asarray(rows_BxL), jnp.ones(rows_BxL.shape, bool), t_B, cfg.diffusion,
                               cfg.vocab.mask_id)
  return z_BxL


def make_step(cfg: Config, graphdef, optimizer, probe_BxL):
  """One program per width for all parametrisations (vmapped over state and forward multipliers): the probe's
  activation RMS at the incoming params, then one optimizer step on the masked-diffusion loss of a shared batch.
  Noise comes from the host, so no PRNG is compiled in."""
  dcfg, mask_id = cfg.diffusion, cfg.vocab.mask_id

  def train_step(state, forward_mults, act0, tokens_BxL, t_B, u_BxL):
    acts = layer_activations(graphdef, state["params"], probe_BxL, forward_mults)
    rms = {"act_rms": {k: _rms(v) for k, v in acts.items()}, "update_rms": {k: _rms(v - act0[k]) for k, v in
                                                                            acts.items()}}
    everything = jnp.ones(tokens_BxL.shape, bool)
    z_BxL, masked_BxL = diffusion.corrupt(u_BxL, tokens_BxL, everything, t_B, dcfg, mask_id)

    def loss(params):
      logits = merged(graphdef, params, forward_mults)(z_BxL)
      terms = diffusion.loss_terms(logits, tokens_BxL, masked_BxL, t_B, everything,
                                   jnp.zeros(tokens_BxL.shape, jnp.int8), dcfg, mask_id)
      return terms.nelbo / terms.tokens

    value, grads = jax.value_and_grad(loss)(state["params"])
    state, _ = optim.update(state, grads, optimizer)
    return state, value, acts, rms

  return jax.jit(jax.vmap(train_step, in_axes=(0, 0, 0, None, None, None)), compiler_options=_FAST_COMPILE)


def _stack(trees):
  return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *trees)   # on the host: no compiles


def run_width(cfgs: list[Config], packed: pipeline.PackedText, verify: bool = False) -> list[dict]:
  """Train every config (same width; parametrisations and init seeds differ) in lockstep on the same real-text
  batches; activation/update RMS per layer before and after every step. `verify` checks the probe against
  model.apply."""
  cfg = cfgs[0]
  # Eager init with the cheap-to-compile rbg PRNG: kernels compile per shape, shared by the parametrisations.
  inits = [model.init(c.model, c.vocab_size, jax.random.key(c.train.seed, impl="rbg"), parametrization.multipliers(c))
           for c in cfgs]
  optimizer = optim.make_optimizer(inits[0][1])
  state = _stack([optim.init_state(params, optim.hyperparams(c), optimizer) for c, (_, params) in zip(cfgs, inits)])
  forward_mults = _stack([{k: np.float32(v) for k, v in parametrization.forward(c).items()} for c in cfgs])
  b, rng = cfg.batch.logical, np.random.default_rng(cfg.train.seed)
  probe_BxL = probe_tokens(cfg, packed.val_rows[:b])
  train_step = make_step(cfg, inits[0][0], optimizer, probe_BxL)
  shapes = jax.eval_shape(lambda params: layer_activations(inits[0][0], params, probe_BxL), inits[0][1])
  act0 = {k: np.zeros((len(cfgs), *v.shape), np.float32) for k, v in shapes.items()}   # replaced after call 0
  rows, losses = [], []
  for i in range(cfg.train.steps + 1):   # the last call only measures the trained params
    tokens_BxL = packed.train_rows[i * b:(i + 1) * b]
    t_B, u_BxL = rng.uniform(cfg.diffusion.sampling_eps, 1, size=b), rng.uniform(size=tokens_BxL.shape)
    new_state, loss_R, acts, rms = train_step(state, forward_mults, act0, tokens_BxL, t_B, u_BxL)
    if i == 0:
      act0 = acts
      rms["update_rms"] = jax.tree.map(np.zeros_like, rms["update_rms"])
    rows.append(jax.device_get(rms))
    if i < cfg.train.steps:
      state = new_state
      losses.append(loss_R)
  if verify:   # the probe re-implements the embedding and head lines and overrides multipliers: check both
    for r, (graphdef, _) in enumerate(inits):
      params = jax.tree.map(lambda x: np.asarray(x)[r], state["params"])
      logits = jax.jit(lambda p, g=graphdef: model.apply(g, p, probe_BxL))(params)
      # Separately compiled programs sum in different orders: float32 round-off scales with the logits' magnitude.
      scale = float(np.abs(np.asarray(logits)).max())
      np.testing.assert_allclose(np.asarray(acts["logits"])[r], np.asarray(logits), rtol=1e-4, atol=2e-5 * scale,
                                 err_msg="coord_check probe no longer matches model.apply")
  per_run = lambda key, r: [{k: float(v[r]) for k, v in row[key].items()} for row in rows]
  return [{"act_rms": per_run("act_rms", r), "update_rms": per_run("update_rms", r),
           "train_loss": [float(x[r]) for x in losses]} for r in range(len(cfgs))]


def check(widths=WIDTHS, parametrizations=PARAMETRIZATIONS, seeds=(0, 1, 2), **kw) -> list[dict]:
  """Coordinate check, one result per parametrisation: per width, per step, per layer RMS averaged over the init
  seeds (module docstring); `by_seed` keeps each seed's [W, T+1, L] activation RMS."""
  t0 = time.perf_counter()
  runs, packed = {}, None
  members = [(p, s) for p in parametrizations for s in seeds]
  for width in widths:
    cfgs = [config_for(p, width, seed=s, **kw) for p, s in members]
    packed = packed or pipeline.load_packed_text(cfgs[0])   # the data config is the same at every width
    runs[width] = run_width(cfgs, packed, verify=width == max(widths))
  layers = list(runs[widths[0]][0]["act_rms"][0])
  out = []
  for p in parametrizations:
    rows = [r for r, m in enumerate(members) if m[0] == p]
    pick = lambda key, r: [[[row[layer] for layer in layers] for row in runs[w][r][key]] for w in widths]
    mean = lambda key: np.mean([pick(key, r) for r in rows], axis=0).tolist()   # [W, T+1, L]
    out.append({"parametrization": p, "widths": list(widths), "layers": layers, "seeds": list(seeds),
                "steps": len(runs[widths[0]][rows[0]]["act_rms"]) - 1, "config": kw,
                "seconds": time.perf_counter() - t0, "act_rms": mean("act_rms"), "update_rms": mean("update_rms"),
                "by_seed": {"act_rms": [pick("act_rms", r) for r in rows]},
                "train_loss": np.mean([[runs[w][r]["train_loss"] for w in widths] for r in rows], axis=0).tolist()})
  return out


def spread(result: dict, key: str = "act_rms", at_step: int = -1) -> dict[str, float]:
  """Per layer, max/min across widths of `key` at one step (1 = flat in width)."""
  x_WxL = np.asarray(result[key])[:, at_step, :]
  return {layer: float(x_WxL[:, j].max() / x_WxL[:, j].min()) for j, layer in enumerate(result["layers"])}


def plot(results: list[dict], stem: str | pathlib.Path) -> list[pathlib.Path]:
  """One column per parametrisation, rows activation / update RMS vs width, one line per layer (final step solid,
  earlier steps faint). Writes STEM.png and STEM.pdf."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(2, len(results), figsize=(4.2 * len(results), 6.4), sharey="row", squeeze=False)
  for col, res in enumerate(results):
    widths = res["widths"]
    for row, key in enumerate(("act_rms", "update_rms")):
      ax = axes[row, col]
      x_WxTxL = np.asarray(res[key])
      for j, layer in enumerate(res["layers"]):
        line, = ax.plot(widths, x_WxTxL[:, -1, j], marker="o", label=layer)
        for t in range(1, x_WxTxL.shape[1] - 1):
          ax.plot(widths, x_WxTxL[:, t, j], color=line.get_color(), alpha=0.25, lw=0.8)
      ax.set_xscale("log", base=2)
      ax.set_yscale("log")
      ax.set_xticks(widths, [str(w) for w in widths])
      worst = max(spread(res, key).values())
      title = f"{res['parametrization']}: {'activation' if row == 0 else 'update'} RMS (max spread {worst:.1f}x)"
      ax.set_title(title, fontsize=9)
      ax.set_xlabel("width d")
      if col == 0:
        seeds = f", mean of {len(res['seeds'])} seeds" if len(res.get("seeds", ())) > 1 else ""
        ax.set_ylabel(f"RMS after {res['steps']} steps{seeds}" if row == 0 else "RMS of change since init")
  axes[0, 0].legend(fontsize=7)
  fig.tight_layout()
  stem = pathlib.Path(stem)
  stem.parent.mkdir(parents=True, exist_ok=True)
  paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
  for p in paths:
    with runio.atomic_path(p) as tmp:
      fig.savefig(tmp, dpi=150)
  plt.close(fig)
  return paths


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True, help="directory for coord_check.json/.png/.pdf")
  parser.add_argument("--widths", default=",".join(map(str, WIDTHS)))
  parser.add_argument("--steps", type=int, default=4)
  parser.add_argument("--lr", type=float, default=1e-2)
  parser.add_argument("--seeds", type=int, default=3, help="init seeds the RMS is averaged over")
  args = parser.parse_args(argv)
  widths = tuple(int(w) for w in args.widths.split(","))
  results = check(widths, seeds=tuple(range(args.seeds)), steps=args.steps, lr=args.lr)
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  runio.write_text_atomic(out / "coord_check.json", json.dumps(results, indent=1))
  plot(results, out / "coord_check")
  for res in results:
    print(res["parametrization"], {k: round(v, 2) for k, v in spread(res).items()}, f"{res['seconds']:.0f}s")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
