"""The `mdm-lab` command: one dispatcher over the subcommands each package registers.

Each package's `cli.py` exposes `register(subparsers)`, adding parsers whose `func(args) -> int` runs the command.
Registration imports only the standard library; heavy imports (jax, pandas, ...) happen inside the handlers, so
`mdm-lab --help` is instant. Dependencies flow one way: this module sits on top of every package.
"""
import argparse
import importlib
import sys

from mdm_jax import hostmem
from mdm_jax.errors import UserError

_COMMAND_MODULES = ("mdm_jax.cli", "mdm_jax.data.cli", "mdm_jax.sampling.cli", "sweeps.cli", "analysis.cli",
                    "labs.lab_cli")


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="mdm-lab", description="Masked-diffusion scaling-law laboratory.")
  subparsers = parser.add_subparsers(dest="command", required=True)
  for name in _COMMAND_MODULES:
    try:
      module = importlib.import_module(name)
    except ModuleNotFoundError as e:
      if e.name != name:  # a real missing dependency inside the module, not an absent module
        raise
      continue
    module.register(subparsers)
  return parser


def main(argv=None) -> int:
  if argv is None:   # run as the `mdm-lab` program (not called from Python): restart once with huge pages on
    hostmem.reexec_with_tunable()
  parser = build_parser()
  args = parser.parse_args(argv)
  try:
    return int(args.func(args) or 0)
  except UserError as e:
    print(f"mdm-lab: error: {e}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print("mdm-lab: interrupted", file=sys.stderr)
    return 130


if __name__ == "__main__":
  sys.exit(main())
