"""`mdm-lab sample` as a function: prompts in, decoded files out (text_*.txt, image_*.png or audio_*.wav).

Sampler settings resolve as built-in defaults < the run's swept defaults (RUN_DIR/inference_defaults.json) < the
caller's explicit values. Everything that can be checked without the model (modality, settings, prompt lengths)
is checked before the checkpoint is loaded.
"""
import dataclasses
import json
import pathlib
import time

import jax

from mdm_jax.data.vocab import MODALITIES
from mdm_jax.errors import UserError
from mdm_jax.sampling import decode, requests, runs, samplers

# steps None: one step per slot (LLaDA's default, gen_length = steps)
BUILTIN = {"sampler": "topk", "steps": None, "temperature": 1.0, "threshold": 0.9, "block_length": 0}
SPEC_FIELDS = tuple(BUILTIN)


def resolve_spec(stored: dict, overrides: dict, slots: int) -> samplers.SamplerSpec:
  merged = {**BUILTIN, **{k: v for k, v in stored.items() if k in SPEC_FIELDS},
            **{k: v for k, v in overrides.items() if v is not None}}
  return samplers.SamplerSpec(**{**merged, "steps": slots if merged["steps"] is None else merged["steps"]})


def build_request(cfg, codecs: decode.Codecs, modality: str, prompts: list[str], copies: int, suffix: str = "",
                  length: int | None = None) -> requests.Request:
  vocab, seq_len = cfg.vocab, cfg.data.seq_len
  if modality == "text":
    return requests.text_request(vocab, codecs.text, seq_len, prompts or [""], suffix, copies)
  codecs.require(modality)
  lengths = []
  for p in prompts:
    n_text = len(codecs.text.encode(p))
    if length is not None:
      lengths.append(length)
    elif modality == "image":
      lengths.append(codecs.image.config.tokens_per_image)
    else:
      lengths.append(audio_length_model(cfg, codecs)(n_text, max(1, seq_len - 3 - n_text)))
  return requests.media_request(vocab, codecs.text, seq_len, modality, prompts, lengths, copies)


def audio_length_model(cfg, codecs: decode.Codecs) -> requests.AudioLength:
  """Audio codes per transcript token, fitted on the run's held-out speech pairs."""
  from mdm_jax.sampling.heldout import HeldOut   # pylint: disable=import-outside-toplevel
  rows = HeldOut.for_config(cfg, ("audio",)).rows("audio")
  text, codes = requests.pair_lengths(rows, cfg.vocab, "audio")
  return requests.AudioLength.fit(text, codes, codecs.audio.config.stages)


def generate(run_dir, modality: str, prompts: list[str], out_dir, num_samples: int = 1, suffix: str = "",
             length: int | None = None, seed: int = 0, step: int | None = None, mesh=None, **spec) -> dict:
  """Samples `num_samples` outputs per prompt and writes them to `out_dir`; returns the summary (sample.json)."""
  requests.check_modality(modality)
  if num_samples < 1:
    raise UserError("--num-samples", f"must be >= 1, got {num_samples}")
  unknown = set(spec) - set(SPEC_FIELDS)
  if unknown:
    raise TypeError(f"unknown sampler settings {sorted(unknown)}")
  resolve_spec({}, spec, slots=1)   # bad settings fail before anything is loaded
  cfg = runs.read_config(run_dir)
  if dict(zip(MODALITIES, cfg.data.mixture))[modality] == 0:
    raise UserError("--modality", f"the run was trained without {modality} data (data.mixture weight 0)",
                    "sample a modality it was trained on")
  codecs = decode.Codecs.for_config(cfg)
  request = build_request(cfg, codecs, modality, list(prompts), num_samples, suffix, length)
  loaded = runs.load(run_dir, step, mesh)
  slots = int((request.tokens == request.mask_id).sum(axis=1).max())
  sampler_spec = resolve_spec(loaded.stored_defaults().get(modality, {}), spec, slots)
  start = time.perf_counter()
  out = samplers.sample(loaded.apply, request.tokens, jax.random.key(seed), sampler_spec, request.mask_id,
                        request.classes, requests.allowed_table(loaded.vocab), loaded.mesh)
  seconds = time.perf_counter() - start
  extra = [{"revealed_at": r.tolist(), "steps": int(s)} for r, s in zip(out.revealed_at, out.row_steps)]
  records = decode.write_samples(out_dir, modality, out.tokens, request.prompts, codecs, extra)
  summary = {"run_dir": str(run_dir), "checkpoint_step": loaded.step, "modality": modality,
             "sampler": dataclasses.asdict(sampler_spec), "nfe": out.nfe, "seconds": round(seconds, 3),
             "seed": seed, "samples": len(records), "files": [r["file"] for r in records]}
  (pathlib.Path(out_dir) / "sample.json").write_text(json.dumps(summary, indent=1))
  return summary
