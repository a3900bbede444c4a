"""The inference-defaults sweep (METHOD.md §7.4): sampler × steps × temperature × λ (× block length) per modality.

Each modality gets a fixed bench of held-out prompts, in the training layout:
  text   the first `prefix` tokens of held-out rows; the rest of the row is generated. Quality: gen-PPL of the
         generated tokens (given the prefix) under the n-gram reference.
  image  held-out caption -> image pairs with their codes masked. Quality: MSE to the nearest held-out image with
         the same caption (decoded pixels, its own pair excluded).
  audio  held-out transcript -> speech pairs with their codes masked (true length). Quality: RMS dB distance of
         utterance log-mel statistics to the nearest other held-out utterance.
Each score comes with the same measure of the held-out data itself (the real-data baseline); lower is better. Both
kinds of score reward degenerate output: repetitive text has a low gen-PPL, and mostly-background images sit close
to every digit. So a setting is eligible only if the token entropy of its samples is at least 90 % of the held-out
data's. Cost is the number of model calls (NFE). The default per modality is the best eligible score (ties: fewer
calls; none eligible: the most diverse setting); it is written to RUN_DIR/inference_defaults.json, which
`mdm-lab sample` reads.
"""
import csv
import dataclasses
import math
import pathlib
import time

import jax
import numpy as np

from mdm_jax import runio
from mdm_jax.data.vocab import MODALITIES
from mdm_jax.sampling import decode, evaluate, reference, requests, runs, samplers
from mdm_jax.sampling.heldout import HeldOut

COLUMNS = ("modality", "sampler", "steps", "temperature", "threshold", "block_length", "nfe", "steps_per_row",
           "seconds", "score", "eligible", "entropy", "baseline_score", "baseline_entropy")
ENTROPY_FLOOR = 0.9


def grid(modality: str, slots: int, quick: bool = False) -> list[samplers.SamplerSpec]:
  """The sampler settings swept for one modality (`slots`: tokens generated per request)."""
  fractions = (0.25, 1.0) if quick else (0.125, 0.25, 0.5, 1.0)
  steps = sorted({max(1, round(slots * f)) for f in fractions})
  temps = (0.7, 1.0) if quick else (0.0, 0.7, 1.0)
  blocks = (0, 32) if modality == "text" and not quick and slots > 32 else (0,)
  specs = [samplers.SamplerSpec(kind, s, t, block_length=b) for kind in ("random", "topk") for s in steps
           for t in temps for b in blocks if s >= (-(-slots // b) if b else 1)]
  specs += [samplers.SamplerSpec("threshold", slots, t, lam, block_length=b) for lam in
            ((0.9,) if quick else (0.7, 0.9, 0.95)) for t in temps for b in blocks]
  return specs


@dataclasses.dataclass
class Bench:
  modality: str
  request: requests.Request
  baseline: dict          # {"score", "entropy"} of the held-out data itself
  scorer: object          # tokens [B, L] -> {"score", "entropy", ...}


def text_bench(heldout: HeldOut, vocab, n: int, prefix: int) -> Bench:
  rows = heldout.rows("text", n)["tokens"]
  lm = reference.KneserNey(vocab.text_size + 1).fit(evaluate.text_ids(heldout.train_text.reshape(-1), vocab))
  prompt_rows = [requests.text_row(vocab, rows.shape[1], r[:prefix]) for r in rows]
  request = requests.build(vocab, "text", prompt_rows, [""] * len(rows))

  def score(tokens_BxL):
    conts = [evaluate.text_ids(r[prefix:], vocab) for r in tokens_BxL]
    nll = np.concatenate([-lm.log_probs(evaluate.text_ids(r, vocab))[prefix:] for r in tokens_BxL])
    return {"score": float(np.exp(nll.mean())), "entropy": evaluate.token_entropy(conts)}

  return Bench("text", request, score(rows), score)


def media_bench(heldout: HeldOut, codecs: decode.Codecs, media: str, n: int) -> Bench:
  vocab, val = codecs.vocab, heldout.rows(media)
  tok = codecs.require(media)
  lo, hi = vocab.range(media)
  masked = val["tokens"][:n].copy()
  masked[~val["prompt"][:n] & (masked >= lo) & (masked < hi)] = vocab.mask_id
  captions = [decode.text_of(r[r < vocab.text_size], vocab, codecs.text) for r in val["tokens"]]
  request = requests.build(vocab, media, list(masked), captions[:n])

  def features(tokens_BxL):
    codes = [decode.media_codes(r, vocab, media) for r in tokens_BxL]
    if media == "image":
      return tok.decode_float(np.stack(codes)).reshape(len(codes), -1), codes
    return evaluate.audio_features([tok.decode_features(c) for c in codes]), codes

  ref, _ = features(val["tokens"])
  groups = captions if media == "image" else None   # speech transcripts are unique: compare to every utterance

  def score(tokens_BxL):   # row i answers held-out pair i's prompt: that pair's own media is not a neighbour
    feats, codes = features(tokens_BxL)
    d = evaluate.nn_distance(feats, ref, groups[:len(feats)] if groups else None, groups,
                             exclude=np.arange(len(feats)))
    return {"score": d if media == "image" else math.sqrt(d), "entropy": evaluate.token_entropy(codes)}

  return Bench(media, request, score(val["tokens"][:n]), score)


def run_bench(loaded: runs.LoadedRun, bench: Bench, specs, seed: int = 0) -> list[dict]:
  rows, table = [], requests.allowed_table(loaded.vocab)
  for spec in specs:
    start = time.perf_counter()
    out = samplers.sample(loaded.apply, bench.request.tokens, jax.random.key(seed), spec, loaded.vocab.mask_id,
                          bench.request.classes, table, loaded.mesh)
    seconds = time.perf_counter() - start
    quality = bench.scorer(out.tokens)
    rows.append({"modality": bench.modality, **{k: v for k, v in dataclasses.asdict(spec).items()
                                                if k != "gumbel_dtype"},
                 "nfe": out.nfe, "steps_per_row": float(out.row_steps.mean()), "seconds": round(seconds, 3),
                 **quality, "baseline_score": bench.baseline["score"],
                 "baseline_entropy": bench.baseline["entropy"]})
  for row in rows:
    row["eligible"] = bool(row["entropy"] >= ENTROPY_FLOOR * row["baseline_entropy"])
  return rows


def choose(rows: list[dict]) -> dict:
  """{modality: settings} with the best eligible score (ties: fewer model calls). If no setting reaches the entropy
  floor, the most diverse one is taken (and marked ineligible): the best score would be the most degenerate."""
  best = {}
  for m in MODALITIES:
    mine = [r for r in rows if r["modality"] == m and np.isfinite(r["score"])]
    pool = [r for r in mine if r["eligible"]]
    if pool:
      r = min(pool, key=lambda r: (r["score"], r["nfe"]))
    elif mine:
      r = max(mine, key=lambda r: (r["entropy"], -r["score"], -r["nfe"]))
    else:
      continue
    best[m] = {k: r[k] for k in ("sampler", "steps", "temperature", "threshold", "block_length", "score", "nfe",
                                 "eligible")}
  return best


def write_table(rows: list[dict], out_dir: pathlib.Path) -> None:
  out_dir.mkdir(parents=True, exist_ok=True)
  with open(out_dir / "defaults.csv", "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
  runio.write_json_atomic(out_dir / "defaults.json", {"rows": rows, "chosen": choose(rows)})


def plot(rows: list[dict], path: pathlib.Path) -> None:
  """Quality (lower is better) against model calls, one panel per modality; eligible settings have a black edge,
  the held-out data's own score is dashed."""
  import matplotlib   # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt   # pylint: disable=import-outside-toplevel
  from matplotlib.lines import Line2D   # pylint: disable=import-outside-toplevel
  from matplotlib.ticker import NullFormatter, ScalarFormatter   # pylint: disable=import-outside-toplevel
  present = [m for m in MODALITIES if any(r["modality"] == m for r in rows)]
  fig, axes = plt.subplots(1, len(present), figsize=(4.6 * len(present), 3.8), squeeze=False,
                           constrained_layout=True)
  labels = {"text": "gen-PPL under the n-gram", "image": "NN MSE (same caption)", "audio": "NN distance (dB)"}
  markers = {"random": "o", "topk": "s", "threshold": "^"}
  for ax, m in zip(axes[0], present):
    mine = [r for r in rows if r["modality"] == m]
    for kind, marker in markers.items():
      pts = [r for r in mine if r["sampler"] == kind]
      if pts:
        sc = ax.scatter([r["nfe"] for r in pts], [r["score"] for r in pts], c=[r["temperature"] for r in pts],
                        marker=marker, cmap="viridis", vmin=0, vmax=1, s=36,
                        edgecolors=["k" if r["eligible"] else "none" for r in pts])
    ax.axhline(mine[0]["baseline_score"], ls="--", c="grey")
    ax.set(xscale="log", xlabel="model calls (NFE)", ylabel=labels[m], title=m)
    ax.set_xticks(sorted({r["steps"] for r in mine}))   # the step budgets swept: a log axis may show no decade
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    if m == "text":
      ax.set_yscale("log")
  handles = [Line2D([], [], ls="", marker=mk, color="grey", label=k) for k, mk in markers.items()]
  handles += [Line2D([], [], ls="", marker="o", color="w", markeredgecolor="k", label="entropy ≥ 90% held-out"),
              Line2D([], [], ls="--", color="grey", label="held-out data")]
  axes[0][0].legend(handles=handles, fontsize=7)
  fig.colorbar(sc, ax=axes[0].tolist(), label="temperature")
  fig.savefig(path, dpi=120)
  plt.close(fig)


def sweep(loaded: runs.LoadedRun, out_dir, modalities=None, prompts: int = 8, prefix: int = 16,
          quick: bool = False, store: bool = True, seed: int = 0, grid_fn=grid) -> dict:
  """Runs the grid for each modality the run was trained on; writes the table, figure and the chosen defaults.

  grid_fn(modality, slots, quick) -> [SamplerSpec]: the settings to try (default: `grid`).
  """
  out_dir = pathlib.Path(out_dir)
  mixture = dict(zip(MODALITIES, loaded.cfg.data.mixture))
  modalities = [m for m in (modalities or MODALITIES) if mixture.get(m, 0) > 0]
  heldout = HeldOut.for_config(loaded.cfg, modalities)
  codecs = decode.Codecs.for_config(loaded.cfg)
  rows = []
  for m in modalities:
    bench = text_bench(heldout, loaded.vocab, prompts, prefix) if m == "text" else media_bench(heldout, codecs,
                                                                                              m, prompts)
    slots = int((bench.request.tokens == loaded.vocab.mask_id).sum(axis=1).max())
    rows += run_bench(loaded, bench, grid_fn(m, slots, quick), seed)
  write_table(rows, out_dir)
  plot(rows, out_dir / "defaults.png")
  chosen = choose(rows)
  if store:
    runio.write_json_atomic(loaded.run_dir / runs.DEFAULTS_FILE,
                            {"defaults": chosen, "checkpoint_step": loaded.step, "table": str(out_dir / "defaults.csv")})
  return {"rows": rows, "chosen": chosen}
