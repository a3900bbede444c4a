"""`mdm-lab fit TABLE_OR_SWEEP_DIR --method approach1|approach2|approach3|vpnls --out DIR`.

Writes DIR/fit.json (unrounded parameters, estimator, conventions, exclusions, diagnostics; bootstrap CIs with
--bootstrap) and the figures. Registration imports only the standard library; the handler imports the rest.
"""
import argparse
import sys

METHODS = ("approach1", "approach2", "approach3", "vpnls")


def _precision(text: str):
  """--budget-precision: an integer (significant figures) or a float in (0, 1) (relative bucket width)."""
  try:
    return int(text)
  except ValueError:
    try:
      return float(text)
    except ValueError:
      raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def _mapping(text: str):
  field, sep, name = text.partition("=")
  if not sep or not field or not name:
    raise argparse.ArgumentTypeError(f"expected FIELD=COLUMN, got {text!r}")
  return field, name


def register(subparsers) -> None:
  p = subparsers.add_parser("fit", help="fit scaling laws to a run table or sweep directory",
                            description=__doc__.splitlines()[0])
  p.add_argument("input", metavar="TABLE_OR_SWEEP_DIR", help="CSV/Parquet table, or a run/sweep directory")
  p.add_argument("--method", required=True, choices=METHODS)
  p.add_argument("--out", required=True, help="output directory for fit.json and figures")
  p.add_argument("--vertex", choices=("parabola", "akima"), default="parabola", help="approach2 profile model")
  p.add_argument("--axis", choices=("params", "tokens"), default="params",
                 help="approach2: profile in log N (params) or log D (tokens)")
  p.add_argument("--budget-precision", type=_precision, default=1,
                 help="approach2 buckets: significant figures (int) or relative width (float < 1)")
  p.add_argument("--bootstrap", type=int, default=0, metavar="K", help="bootstrap resamples (0: none)")
  p.add_argument("--seed", type=int, default=0, help="bootstrap seed (a fixed seed reproduces the CIs)")
  p.add_argument("--exclude-top-loss", type=int, default=0, metavar="K",
                 help="drop the K highest-loss rows (recorded, with a with/without sensitivity refit)")
  p.add_argument("--column", type=_mapping, action="append", default=[], metavar="FIELD=COLUMN",
                 help="map a table column to params/tokens/flops/loss, e.g. params='Model Size'")
  p.add_argument("--convention", choices=("total", "non_embedding", "with_head", "with_attention"),
                 help="parameter-counting convention of N (run dirs: which count to use; tables: what it is)")
  p.add_argument("--loss-key", default="eval/loss", help="run dirs: metric used as the loss")
  p.add_argument("--per-step", action="store_true", help="run dirs: one row per eval step (approach1 needs it)")
  p.add_argument("--loss", choices=("huber", "mse"), default="huber", help="approach3 loss on log residuals")
  p.add_argument("--delta", type=float, default=1e-3, help="approach3 Huber delta")
  p.add_argument("--at-flops", type=float, nargs="+", help="compute budgets for the frontier and its CIs")
  p.add_argument("--formats", default="pdf,svg,png", help="figure formats, comma-separated ('' for none)")
  p.set_defaults(func=_run)


def _run(args) -> int:
  from analysis import pipeline

  table = pipeline.load_runs(args.input, columns=dict(args.column) or None, convention=args.convention,
                             **({"loss_key": args.loss_key, "per_step": args.per_step} if _is_dir(args.input) else {}))
  fit_kw = {}
  if args.method == "approach2":
    fit_kw = {"axis": args.axis, "vertex": args.vertex, "budget_precision": args.budget_precision}
  elif args.method == "approach3":
    fit_kw = {"loss": args.loss, "delta": args.delta}
  formats = tuple(f for f in args.formats.split(",") if f)
  fit, boot, paths = pipeline.run_fit(table, args.method, args.out, exclude_top_loss=args.exclude_top_loss,
                                      n_bootstrap=args.bootstrap, seed=args.seed, at_flops=args.at_flops,
                                      figure_formats=formats, **fit_kw)
  _report(fit, table, boot, paths)
  return 0


def _is_dir(path) -> bool:
  import pathlib
  return pathlib.Path(path).is_dir()


def _report(fit, table, boot, paths) -> None:
  out = sys.stdout
  print(f"{fit.method}: {len(table)} rows from {table.source or 'input'}; conventions N={table.params_convention}, "
        f"C={table.flops_convention}", file=out)
  for note in table.notes:
    print(f"  note: {note}", file=out)
  for excl in fit.input.get("exclusions", []):
    print(f"  excluded: {excl.get('rule') or excl.get('run_id')} {excl.get('reason', '')}".rstrip(), file=out)
  if hasattr(fit, "params"):
    p = fit.params
    print(f"  E={p['E']:.6g} A={p['A']:.6g} B={p['B']:.6g} alpha={p['alpha']:.6g} beta={p['beta']:.6g} "
          f"objective={fit.objective:.6g}", file=out)
  print(f"  a={fit.a:.6g} (N* ~ C^a)  b={fit.b:.6g} (D* ~ C^b)", file=out)
  if boot is not None:
    q = boot.summary["quantities"]
    ci = {k: q[k]["ci"] for k in ("alpha", "beta", "a", "b") if k in q and q[k].get("n")}
    print("  " + "  ".join(f"{k} {100 * boot.summary['level']:.0f}% CI [{lo:.4g}, {hi:.4g}]"
                           for k, (lo, hi) in ci.items()), file=out)
  print(f"  diagnostics: status={fit.diagnostics.get('status')}", file=out)
  for w in fit.diagnostics.get("warnings", []):
    print(f"  warning: {w}", file=out)
  print(f"  wrote {len(paths)} files to {paths[0].parent if paths else '-'}", file=out)
