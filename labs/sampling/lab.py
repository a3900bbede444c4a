"""Inference defaults per modality: sampler × steps × temperature × λ on one small tri-modal model, with samples.

Trains one small model on the tri-modal `tiny` data (a one-run sweep, reused once finished), measures its
validation ELBO per modality with standard errors, runs the inference-defaults sweep (mdm_jax.sampling.defaults:
quality against held-out data vs model calls; an entropy floor guards against degenerate output) and stores the
chosen defaults in the run, then decodes a few samples with them: text continuations, a PNG grid of one image per
digit caption, and WAV files of spoken lines.
"""
import json
import math

from labs import trimodal
from labs.report import Report

SWEEP = "model"
TEXT_PROMPTS = ("ROMEO:", "To be, or not to be", "The king")
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
PREFIX = 128   # text bench: held-out rows cut after 128 tokens; the other 128 are generated
SPOKEN = ("Shall I compare thee to a summer's day?", "When I do count the clock that tells the time")
CI = {"train.steps": 30, "train.eval_every": 30, "train.checkpoint_every": 30, "train.log_every": 10,
      "train.eval_batches": 1}


def grid(modality: str, slots: int, quick: bool):
  """The lab's grid: the axes of the CLI's full grid (`mdm-lab sample-sweep`) with about a quarter of its model
  calls (≈ 5.4 per slot): top-k at 1/8, 1/4, 1/2 of a call per slot × T ∈ {0, 0.7, 1}; random at 1/4 and 1/2
  × T ∈ {0.7, 1}; threshold λ ∈ {0.7, 0.9} on half a call per slot; text adds semi-AR blocks of 32 slots."""
  from mdm_jax.sampling import defaults   # pylint: disable=import-outside-toplevel
  from mdm_jax.sampling.samplers import SamplerSpec   # pylint: disable=import-outside-toplevel
  if quick:
    return defaults.grid(modality, slots, quick=True)
  eighth, quarter, half = sorted({max(1, round(slots * f)) for f in (0.125, 0.25, 0.5)} | {1, 2})[-3:]
  specs = [SamplerSpec("topk", s, t) for s in (eighth, quarter, half) for t in (0.0, 0.7, 1.0)]
  specs += [SamplerSpec("random", s, t) for s in (quarter, half) for t in (0.7, 1.0)]
  specs += [SamplerSpec("threshold", half, 0.7, lam) for lam in (0.7, 0.9)]
  if modality == "text" and slots > 32 and quarter >= math.ceil(slots / 32):   # semi-AR blocks of 32 slots
    specs.append(SamplerSpec("topk", quarter, 0.7, block_length=32))
  return list(dict.fromkeys(specs))


def spec(ctx, data_fields: dict):
  """The model's one-run sweep at the context's scale, on the data DATA_FIELDS point at."""
  fields = {**ctx.spec("model.yaml").data["set"], **data_fields, **(CI if ctx.scale == "ci" else {})}
  return ctx.spec("model.yaml", set=fields)


def run(ctx) -> None:
  sweep_dir = ctx.sweep(SWEEP, spec(ctx, trimodal.run_fields(*trimodal.prepared("tiny"))))
  evaluate_and_sample(ctx, next(sweep_dir.glob("runs/*")))


def evaluate_and_sample(ctx, run_dir) -> None:
  """ELBO, the defaults sweep (stored in RUN_DIR) and samples with the chosen defaults, into the lab's output."""
  from mdm_jax.data import pipeline   # pylint: disable=import-outside-toplevel
  from mdm_jax.runio import write_json_atomic   # pylint: disable=import-outside-toplevel
  from mdm_jax.sampling import defaults, evaluate, generate, runs   # pylint: disable=import-outside-toplevel
  loaded = runs.load(run_dir)
  batches = [b for group in pipeline.DataSource(loaded.cfg).eval.values() for b in group]
  elbo = evaluate.elbo(loaded.apply, batches, loaded.cfg.diffusion, loaded.vocab.mask_id, t_samples=16)
  write_json_atomic(ctx.out / "elbo.json", {**elbo, "checkpoint_step": loaded.step})
  quick = ctx.scale == "ci"
  defaults.sweep(loaded, ctx.out / "defaults", prompts=4 if quick else 6, prefix=PREFIX, quick=quick, grid_fn=grid)
  samples = ctx.out / "samples"
  generate.generate(run_dir, "text", list(TEXT_PROMPTS), samples / "text", seed=0)
  generate.generate(run_dir, "image", [f"a handwritten digit {d}" for d in DIGITS], samples / "image", seed=0)
  generate.generate(run_dir, "audio", list(SPOKEN), samples / "audio", seed=0)


def image_grid(paths, out_path, columns: int = 5, scale: int = 3):
  """The PNG samples tiled into one image (in order, `columns` per row), each enlarged `scale` times."""
  from PIL import Image   # pylint: disable=import-outside-toplevel
  images = [Image.open(p) for p in paths]
  w, h = images[0].size
  rows = math.ceil(len(images) / columns)
  sheet = Image.new(images[0].mode, (columns * w * scale, rows * h * scale))
  for i, im in enumerate(images):
    sheet.paste(im.resize((w * scale, h * scale), Image.NEAREST), ((i % columns) * w * scale, (i // columns) * h * scale))
  sheet.save(out_path)
  return out_path


def report(ctx) -> Report:
  from mdm_jax.sampling import defaults   # pylint: disable=import-outside-toplevel
  rep = Report("Sampling: inference defaults per modality", "Which sampler, step count, temperature and threshold "
               "give the best samples per model call, per modality, for a small tri-modal masked-diffusion model?")
  table_path = ctx.out / "defaults" / "defaults.json"
  if not table_path.is_file():
    return rep.add("Results", "No defaults sweep yet: run `mdm-lab lab run` first.")
  elbo = json.loads((ctx.out / "elbo.json").read_text())
  rep.add("Validation ELBO", f"{elbo['t_samples']} stratified t per sequence (checkpoint step "
          f"{elbo['checkpoint_step']}); ± standard error over sequences (Monte Carlo part in brackets).\n\n"
          "| modality | nats/token | bits/token | sequences |\n|---|---|---|---|\n" + "\n".join(
              f"| {m} | {r['nats_per_token']:.3f} ± {r['se']:.3f} ({r['se_mc']:.3f}) | {r['bits_per_token']:.3f} | "
              f"{r['sequences']} |" for m, r in sorted(elbo.items(), key=lambda kv: kv[0] == "all")
              if isinstance(r, dict)))
  sweep = json.loads(table_path.read_text())
  rows, chosen = sweep["rows"], sweep["chosen"]
  rep.add("Chosen defaults", "Best score among settings whose samples keep ≥ 90 % of the held-out token entropy "
          "(ties: fewer model calls). Scores, lower is better: text gen-PPL under the lab's Kneser-Ney reference "
          "(fitted on the run's training text); image MSE to the nearest held-out image of the same caption; audio "
          "RMS dB distance of log-mel statistics to the nearest held-out utterance.\n\n"
          "| modality | sampler | steps | T | λ | block | NFE | score | held-out data | eligible |\n"
          "|---|---|---|---|---|---|---|---|---|---|\n" + "\n".join(
              f"| {m} | {c['sampler']} | {c['steps']} | {c['temperature']} | "
              f"{c['threshold'] if c['sampler'] == 'threshold' else '-'} | {c['block_length'] or '-'} | {c['nfe']} | "
              f"{c['score']:.4g} | {next(r['baseline_score'] for r in rows if r['modality'] == m):.4g} | "
              f"{c['eligible']} |" for m, c in chosen.items())
          + f"\n\nFull table ({len(rows)} settings): `defaults/defaults.csv`; stored as the run's "
          "`inference_defaults.json`, which `mdm-lab sample` reads.")
  paths = [ctx.figures / "quality_vs_nfe.png", ctx.figures / "quality_vs_nfe.svg"]
  for path in paths:
    defaults.plot(rows, path)
  rep.figure("Quality vs model calls", paths, "One panel per modality; marker: sampler, colour: temperature, "
             "black edge: entropy ≥ 90 % of held-out data; dashed: the held-out data's own score.")
  samples = ctx.out / "samples"
  texts = [json.loads(line) for line in (samples / "text" / "samples.jsonl").read_text().splitlines()]
  rep.add("Text samples", "\n\n".join(f"**{r['prompt']!r}** →\n\n```\n{r['text'][:400]}\n```" for r in texts))
  grid_png = image_grid(sorted((samples / "image").glob("image_*.png")), ctx.figures / "image_samples.png")
  rep.figure("Image samples", [grid_png], "Captions 'a handwritten digit zero' … 'nine', left to right, top to "
             "bottom, decoded by the image tokenizer.")
  wavs = json.loads((samples / "audio" / "sample.json").read_text())
  audio = [json.loads(line) for line in (samples / "audio" / "samples.jsonl").read_text().splitlines()]
  rep.add("Audio samples", "\n".join(f"- [samples/audio/{r['file']}](samples/audio/{r['file']}): {r['prompt']!r}, "
                                      f"{r['samples'] / r['sample_rate']:.2f} s" for r in audio)
          + f"\n\nSampler: {wavs['sampler']['sampler']}, {wavs['nfe']} model calls.")
  return rep
