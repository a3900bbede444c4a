"""The public API resolves lazily; importing the package (and its CLI registration) pulls in no heavy module."""
import subprocess
import sys

import analysis


def test_every_exported_name_resolves():
  for name in analysis.__all__:
    assert getattr(analysis, name) is not None
  assert callable(analysis.bootstrap) and callable(analysis.fit_approach3) and callable(analysis.allocate)


def test_cli_registration_imports_only_the_standard_library():
  code = ("import sys, argparse, analysis.cli; p = argparse.ArgumentParser(); analysis.cli.register("
          "p.add_subparsers()); print(','.join(m for m in ('pandas', 'numpy', 'scipy', 'matplotlib') if m in sys.modules))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
  assert out == ""
