"""`mdm-lab train CONFIG --out DIR [--set key=value ...]`: train (or resume) one run."""
import argparse


def register(subparsers) -> None:
  p = subparsers.add_parser("train", help="train a masked-diffusion model (resumes if DIR has a checkpoint)")
  p.add_argument("config", help="YAML/JSON config path, or a bundled name (e.g. tiny)")
  p.add_argument("--out", required=True, help="run directory: run.json, metrics.jsonl, checkpoints/")
  p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                 help="override a config field, e.g. --set optim.lr=1e-3 (repeatable)")
  p.add_argument("--no-progress", action="store_true", help="no progress bar")
  p.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
  from mdm_jax.config import load_config
  cfg = load_config(args.config, args.overrides).replace(output_dir=str(args.out))
  from mdm_jax.train import train   # heavy imports only once the config is valid
  result = train(cfg, args.out, progress=not args.no_progress)
  final = result.final
  summary = ", ".join(f"{k}={final[k]:.4f}" for k in ("train/loss", "eval/loss") if k in final)
  print(f"{result.status} at step {result.step}: {summary} -> {result.run_dir}")
  if result.status == "interrupted":
    print("checkpoint saved; run the same command again to resume")
    return 130
  return 0 if result.status == "done" else 1
