"""`mdm-lab lab run|report|list`: run a lab folder end to end, or rebuild its report from finished runs."""
import argparse
import pathlib

RUNNERS = ("inprocess", "vmap", "processes", "ray")


def register(subparsers) -> None:
  p = subparsers.add_parser("lab", help="run a lab (plan, train, fit, report) or rebuild its report")
  sub = p.add_subparsers(dest="lab_command", required=True)
  run = sub.add_parser("run", help="plan, train (resumably), fit and write report.md + figures")
  report = sub.add_parser("report", help="rebuild report.md and figures from the finished runs only")
  for q in (run, report):
    q.add_argument("lab", help="lab folder, e.g. labs/quickstart")
    q.add_argument("--out", required=True, help="output directory (sweeps/, figures/, report.md)")
    q.add_argument("--scale", choices=("default", "ci"), default="default",
                   help="ci: the reduced grid used by the end-to-end test")
  run.add_argument("--runner", choices=RUNNERS, default=None,
                   help="default: the lab's RUNNER (e.g. vmap for many equal-shape runs), else inprocess")
  run.add_argument("--workers", type=int, default=0, help="processes/ray runners: runs in flight")
  run.add_argument("--group-size", type=int, default=8, help="vmap runner: runs trained as one program")
  run.add_argument("--no-progress", action="store_true", help="no live progress bars")
  run.set_defaults(func=_run)
  report.set_defaults(func=_report)
  listing = sub.add_parser("list", help="the labs shipped with mdm-lab")
  listing.set_defaults(func=_list)


def _context(args, **kw):
  from labs.common import LabContext   # pylint: disable=import-outside-toplevel
  from mdm_jax.errors import UserError   # pylint: disable=import-outside-toplevel
  out = pathlib.Path(args.out)
  if out.exists() and not out.is_dir():
    raise UserError(str(out), "exists and is not a directory", "give a directory for --out")
  out.mkdir(parents=True, exist_ok=True)
  return LabContext(pathlib.Path(args.lab), out, scale=args.scale, **kw)


def _run(args: argparse.Namespace) -> int:
  import time   # pylint: disable=import-outside-toplevel
  from labs import common   # pylint: disable=import-outside-toplevel
  from mdm_jax.errors import UserError   # pylint: disable=import-outside-toplevel
  if args.workers < 0:
    raise UserError("--workers", f"must be >= 0, got {args.workers}", "0 = the runner's default")
  if args.group_size <= 0:
    raise UserError("--group-size", f"must be > 0, got {args.group_size}")
  lab = common.load_lab(args.lab)
  ctx = _context(args, runner=args.runner or getattr(lab, "RUNNER", "inprocess"), workers=args.workers,
                 group_size=args.group_size, progress=not args.no_progress)
  start = time.time()
  try:
    lab.run(ctx)
  finally:   # an interrupted session still counts towards the lab's wall time
    common.record_session(ctx.out, ctx.lab_dir, ctx.scale, ctx.runner, time.time() - start)
  return _write_report(lab, ctx)


def _report(args: argparse.Namespace) -> int:
  from labs import common   # pylint: disable=import-outside-toplevel
  lab = common.load_lab(args.lab)
  return _write_report(lab, _context(args))


def _write_report(lab, ctx) -> int:
  report = lab.report(ctx)
  path = report.write(ctx)
  print(f"wrote {path}" + ("" if report.clean else "  (fit diagnostics need attention: see the report)"))
  return 0


def _list(args: argparse.Namespace) -> int:
  del args
  import ast   # pylint: disable=import-outside-toplevel
  for lab in sorted(pathlib.Path(__file__).parent.glob("*/lab.py")):
    doc = ast.get_docstring(ast.parse(lab.read_text())) or ""
    print(f"labs/{lab.parent.name:16s} {doc.splitlines()[0] if doc else ''}")
  return 0
