"""What every lab shares: where it writes, how it runs its sweeps, and the facts every report states.

A lab is a folder (labs/NAME/, or your copy of one) holding `lab.py` and its sweep specs. `lab.py` defines

    def run(ctx: LabContext) -> None        # plan and train (resumable); may call ctx.sweep(...) several times
    def report(ctx: LabContext) -> Report   # fit and draw from finished runs only; no training
    RUNNER = "vmap"                         # optional: the runner used when --runner is not given

`mdm-lab lab run LAB --out DIR` calls both; `mdm-lab lab report LAB --out DIR` calls only `report`. Labs read a
scale ("default", or "ci" for the reduced end-to-end test) from `ctx.scale` and choose their grid by it.
"""
import dataclasses
import importlib.util
import json
import pathlib
import time
import types

from mdm_jax import runio
from mdm_jax.errors import UserError

SCALES = ("default", "ci")
LAB_JSON = "lab.json"


@dataclasses.dataclass
class LabContext:
  lab_dir: pathlib.Path              # the lab's template folder (lab.py and its specs)
  out: pathlib.Path                  # the lab's output directory: sweeps/, figures/, report.md, lab.json
  runner: str = "inprocess"
  scale: str = "default"
  workers: int = 0
  group_size: int = 8
  progress: bool = True

  @property
  def figures(self) -> pathlib.Path:
    path = self.out / "figures"
    path.mkdir(parents=True, exist_ok=True)
    return path

  def sweep_dir(self, name: str) -> pathlib.Path:
    return self.out / "sweeps" / name

  def spec(self, filename: str, **edits):
    """The lab's spec FILE (YAML beside lab.py) with top-level EDITS applied (e.g. isoflop=..., set=...)."""
    import yaml   # pylint: disable=import-outside-toplevel
    from sweeps.spec import Spec, load_spec   # pylint: disable=import-outside-toplevel
    spec = load_spec(self.lab_dir / filename)
    if not edits:
      return spec
    data = {**spec.data, **edits}
    return Spec(data, spec.base_dir, yaml.safe_dump(data, sort_keys=False))

  def sweep(self, name: str, spec) -> pathlib.Path:
    """Runs SPEC (a Spec, a dict or a path) into OUT/sweeps/NAME with the lab's runner; returns that directory.
    Finished runs are never trained again, so an interrupted lab resumes where it stopped."""
    from sweeps.launch import run_sweep   # pylint: disable=import-outside-toplevel
    from sweeps.runners import RunOptions   # pylint: disable=import-outside-toplevel
    from sweeps.spec import Spec   # pylint: disable=import-outside-toplevel
    if isinstance(spec, dict):
      import yaml   # pylint: disable=import-outside-toplevel
      spec = Spec(spec, self.lab_dir, yaml.safe_dump(spec, sort_keys=False))
    opts = RunOptions(workers=self.workers, group_size=self.group_size, cpus_per_run=0, processes_per_run=0)
    out = self.sweep_dir(name)
    counts = run_sweep(spec, out, self.runner, opts, progress=self.progress)
    if counts.get("failed"):
      print(f"warning: {counts['failed']} run(s) of {out} failed; `mdm-lab sweep status {out} --runs` lists them")
    return out


def load_lab(path) -> types.ModuleType:
  """Imports LAB/lab.py by path (a lab may be a user's copy anywhere on disk)."""
  lab_dir = pathlib.Path(path)
  if not (lab_dir / "lab.py").is_file():
    known = ", ".join(sorted(p.parent.name for p in pathlib.Path(__file__).parent.glob("*/lab.py")))
    raise UserError(str(lab_dir), "not a lab folder (no lab.py)", f"give labs/NAME, one of: {known}")
  spec = importlib.util.spec_from_file_location(f"mdm_lab_lab_{lab_dir.resolve().name}", lab_dir / "lab.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  for fn in ("run", "report"):
    if not callable(getattr(module, fn, None)):
      raise UserError(str(lab_dir / "lab.py"), f"defines no {fn}(ctx) function", "see labs/common.py")
  return module


def record_session(out: pathlib.Path, lab_dir: pathlib.Path, scale: str, runner: str, seconds: float) -> dict:
  """Appends one `lab run` session (wall time, runner, scale) to OUT/lab.json; returns the whole record."""
  record = {"lab": lab_dir.resolve().name, **lab_record(out)}
  record["sessions"].append({"started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(time.time() - seconds)),
                             "seconds": round(seconds, 1), "runner": runner, "scale": scale})
  runio.write_json_atomic(out / LAB_JSON, record)
  return record


def lab_record(out: pathlib.Path) -> dict:
  path = out / LAB_JSON
  return runio.read_json(path) if path.is_file() else {"sessions": []}


def sweep_facts(out: pathlib.Path) -> dict:
  """Counts, FLOPs, run wall time and hardware over every run under OUT/sweeps/ (from run.json files)."""
  facts = {"runs": 0, "by_status": {}, "train_flops": 0.0, "run_seconds": 0.0, "hardware": None, "versions": None}
  for run_json in sorted((out / "sweeps").glob("*/runs/*/run.json")):
    try:
      run = json.loads(run_json.read_text())
    except (OSError, ValueError):
      continue
    facts["runs"] += 1
    facts["by_status"][run.get("status")] = facts["by_status"].get(run.get("status"), 0) + 1
    final = run.get("final") or {}
    facts["train_flops"] += float(final.get("flops") or 0.0)
    # a vmapped group's members each record the group's wall time: count a member's share of it
    facts["run_seconds"] += float(run.get("wall_time") or 0.0) / max(int(run.get("group_size") or 1), 1)
    facts["hardware"] = facts["hardware"] or run.get("hardware")
    facts["versions"] = facts["versions"] or run.get("versions")
  return facts
