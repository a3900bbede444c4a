"""`mdm-lab sample`, `mdm-lab sample-sweep` and `mdm-lab elbo`: generate from, tune and evaluate a trained run."""
import argparse
import json


def register(subparsers) -> None:
  p = subparsers.add_parser("sample", help="generate text, images (PNG) or audio (WAV) from a trained run")
  p.add_argument("run_dir", help="a run directory written by `mdm-lab train`")
  p.add_argument("--modality", required=True, help="text | image | audio")
  p.add_argument("--prompt", action="append", default=[],
                 help="text prefix, image caption or audio transcript (repeatable: one batch row each)")
  p.add_argument("--suffix", default="", help="text only: right context, making the request an infill")
  p.add_argument("--out", required=True, help="output directory: files, samples.jsonl, sample.json")
  p.add_argument("--num-samples", type=int, default=1, help="samples per prompt (default 1)")
  p.add_argument("--sampler", help="random | topk | threshold (default: swept defaults, else topk)")
  p.add_argument("--steps", type=int, help="model-call budget (default: one per generated token)")
  p.add_argument("--temperature", type=float, help="0 = argmax candidates (default 1.0)")
  p.add_argument("--threshold", type=float, help="λ of the threshold sampler (default 0.9)")
  p.add_argument("--block-length", type=int, help="semi-autoregressive block length in tokens (0 = one block)")
  p.add_argument("--length", type=int, help="media tokens to generate (audio default: predicted from the prompt)")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--checkpoint-step", type=int, help="checkpoint to load (default: latest)")
  p.set_defaults(func=_sample)

  s = subparsers.add_parser("sample-sweep", help="sweep sampler settings per modality; store the best as defaults")
  s.add_argument("run_dir")
  s.add_argument("--out", required=True, help="directory for defaults.csv, defaults.json and defaults.png")
  s.add_argument("--modalities", default="", help="comma-separated subset (default: all the run was trained on)")
  s.add_argument("--prompts", type=int, default=8, help="held-out prompts per modality")
  s.add_argument("--prefix", type=int, default=16, help="text prompt length in tokens")
  s.add_argument("--quick", action="store_true", help="a smaller grid")
  s.add_argument("--no-store", action="store_true", help="do not write RUN_DIR/inference_defaults.json")
  s.add_argument("--seed", type=int, default=0)
  s.set_defaults(func=_sweep)

  e = subparsers.add_parser("elbo", help="validation ELBO per modality with standard errors")
  e.add_argument("run_dir")
  e.add_argument("--t-samples", type=int, default=16, help="stratified diffusion times per sequence (even)")
  e.add_argument("--batches", type=int, default=0, help="validation batches per modality (default: the run's)")
  e.add_argument("--seed", type=int, default=0)
  e.add_argument("--checkpoint-step", type=int)
  e.add_argument("--json", help="also write the result to this file")
  e.set_defaults(func=_elbo)


def _sample(args: argparse.Namespace) -> int:
  from mdm_jax.sampling import generate
  summary = generate.generate(args.run_dir, args.modality, args.prompt, args.out, num_samples=args.num_samples,
                              suffix=args.suffix, length=args.length, seed=args.seed, step=args.checkpoint_step,
                              sampler=args.sampler, steps=args.steps, temperature=args.temperature,
                              threshold=args.threshold, block_length=args.block_length)
  spec = summary["sampler"]
  print(f"{summary['samples']} {args.modality} sample(s) -> {args.out} ({spec['sampler']}, {spec['steps']} steps, "
        f"T={spec['temperature']}, {summary['nfe']} model calls, {summary['seconds']:.1f} s)")
  return 0


def _sweep(args: argparse.Namespace) -> int:
  from mdm_jax.errors import UserError
  from mdm_jax.sampling import defaults, requests, runs
  modalities = [requests.check_modality(m.strip()) for m in args.modalities.split(",") if m.strip()]
  if args.prompts < 2:
    raise UserError("--prompts", f"must be >= 2, got {args.prompts}")
  result = defaults.sweep(runs.load(args.run_dir), args.out, modalities or None, args.prompts, args.prefix,
                          args.quick, not args.no_store, args.seed)
  for m, best in result["chosen"].items():
    print(f"{m}: {best}")
  print(f"{len(result['rows'])} settings -> {args.out}/defaults.csv, defaults.png")
  return 0


def _elbo(args: argparse.Namespace) -> int:
  from mdm_jax.data import pipeline
  from mdm_jax.sampling import evaluate, runs
  loaded = runs.load(args.run_dir, args.checkpoint_step)
  cfg = loaded.cfg
  groups = pipeline.DataSource(cfg).eval
  batches = [b for group in groups.values() for b in (group[:args.batches] if args.batches else group)]
  result = evaluate.elbo(loaded.apply, batches, cfg.diffusion, cfg.vocab.mask_id, args.t_samples, args.seed)
  result["checkpoint_step"] = loaded.step
  for name, r in result.items():
    if isinstance(r, dict):
      print(f"{name:6s} {r['nats_per_token']:.4f} nats/token ± {r['se']:.4f} (MC ± {r['se_mc']:.4f}), "
            f"{r['bits_per_token']:.4f} bits, {r['sequences']} sequences")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(result, f, indent=1)
  return 0
