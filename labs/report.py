"""report.md for a lab: its sections and figures, then the facts every report states (hardware, counting
conventions, number of runs, total FLOPs, wall time), gathered from the run files rather than typed in."""
import dataclasses
import os
import pathlib

from labs import common
from mdm_jax import runio


@dataclasses.dataclass
class Report:
  title: str
  summary: str = ""
  sections: list = dataclasses.field(default_factory=list)   # (heading, markdown)
  conventions: dict = dataclasses.field(default_factory=lambda: {
      "params": "total (embeddings and head included)", "flops": "non-causal (METHOD.md §6.1), train only",
      "loss": "masked-diffusion NELBO in nats per token"})
  clean: bool = True                                            # False: a fit diagnostic needs attention

  def add(self, heading: str, markdown: str) -> "Report":
    self.sections.append((heading, markdown.strip()))
    return self

  def figure(self, heading: str, paths, caption: str = "") -> "Report":
    """Embeds the PNG of a saved figure (PDF/SVG beside it are listed), relative to the report."""
    paths = [pathlib.Path(p) for p in paths]
    png = next((p for p in paths if p.suffix == ".png"), paths[0])
    others = ", ".join(f"[{p.suffix[1:]}](figures/{p.name})" for p in paths if p != png)
    return self.add(heading, f"![{heading}](figures/{png.name})\n\n{caption}" + (f" ({others})" if others else ""))

  def write(self, ctx: common.LabContext) -> pathlib.Path:
    facts = common.sweep_facts(ctx.out)
    sessions = common.lab_record(ctx.out)["sessions"]
    lines = [f"# {self.title}", ""]
    if self.summary:
      lines += [self.summary.strip(), ""]
    for heading, body in self.sections:
      lines += [f"## {heading}", "", body, ""]
    lines += ["## Setup", "", *_facts_lines(facts, sessions, self.conventions), ""]
    return runio.write_text_atomic(ctx.out / "report.md", "\n".join(lines))


def _facts_lines(facts: dict, sessions: list, conventions: dict) -> list[str]:
  hw = facts["hardware"] or {}
  versions = facts["versions"] or {}
  statuses = ", ".join(f"{n} {s}" for s, n in sorted(facts["by_status"].items(), key=lambda kv: str(kv[0])))
  lab_seconds = sum(s["seconds"] for s in sessions)
  return [
      f"- Hardware: {hw.get('device_count', '?')} × {hw.get('device_kind', '?')} ({hw.get('platform', '?')}), "
      f"{hw.get('cpu_count', os.cpu_count())} CPU cores, {hw.get('processor', '?')}",
      f"- Software: " + ", ".join(f"{k} {v}" for k, v in versions.items() if k in ("python", "jax", "flax", "optax")),
      f"- Runs: {facts['runs']} ({statuses or 'none'})",
      f"- Total training compute: {facts['train_flops']:.3g} FLOPs",
      f"- Wall time: {_hms(lab_seconds)} over {len(sessions)} `lab run` session(s) "
      f"({', '.join(s['runner'] for s in sessions) or '-'}); {_hms(facts['run_seconds'])} summed over runs",
      *[f"- Convention, {k}: {v}" for k, v in conventions.items()],
  ]


def _hms(seconds: float) -> str:
  m, s = divmod(int(round(seconds)), 60)
  h, m = divmod(m, 60)
  return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"
