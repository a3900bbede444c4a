"""The inference-defaults sweep: its grid, its choice rule, its files, and a short real run."""
import csv
import json

import pytest

from mdm_jax.sampling import defaults, generate, runs
from mdm_jax.sampling.samplers import SamplerSpec


def test_grid_covers_samplers_steps_temperatures_and_thresholds():
  specs = defaults.grid("text", 128)
  assert {s.sampler for s in specs} == {"random", "topk", "threshold"}
  assert {s.steps for s in specs if s.sampler == "topk"} == {16, 32, 64, 128}
  assert {s.temperature for s in specs} == {0.0, 0.7, 1.0}
  assert {s.threshold for s in specs if s.sampler == "threshold"} == {0.7, 0.9, 0.95}
  assert {s.block_length for s in specs} == {0, 32}
  assert {s.block_length for s in defaults.grid("image", 49)} == {0}   # no left-to-right blocks on image grids


def _row(modality, score, nfe, eligible=True, **spec):
  return {"modality": modality, "score": score, "nfe": nfe, "eligible": eligible, "entropy": 1.0,
          "baseline_score": 1.0, "baseline_entropy": 1.0, **{**vars(SamplerSpec()), **spec}}


def test_choice_takes_the_best_eligible_score_then_fewer_calls():
  rows = [_row("text", 10.0, 8, eligible=False, steps=8), _row("text", 20.0, 64, steps=64),
          _row("text", 20.0, 16, steps=16), _row("image", 0.1, 4, sampler="threshold"), _row("image", 0.2, 2)]
  chosen = defaults.choose(rows)
  assert chosen["text"]["steps"] == 16 and chosen["image"]["sampler"] == "threshold" and "audio" not in chosen
  repetitive = [_row("text", 5.0, 8, eligible=False), {**_row("text", 50.0, 8, eligible=False), "entropy": 3.0}]
  pick = defaults.choose(repetitive)["text"]
  assert pick["score"] == 50.0 and not pick["eligible"]   # the most diverse, not the lowest (repetitive) PPL


def test_table_and_figure_are_written(tmp_path):
  rows = [_row("text", 30.0, 8), _row("text", 25.0, 16, temperature=0.7), _row("image", 0.05, 4, sampler="random")]
  defaults.write_table(rows, tmp_path)
  defaults.plot(rows, tmp_path / "defaults.png")
  with open(tmp_path / "defaults.csv") as f:
    table = list(csv.DictReader(f))
  assert [r["modality"] for r in table] == ["text", "text", "image"] and float(table[1]["score"]) == 25.0
  assert json.loads((tmp_path / "defaults.json").read_text())["chosen"]["text"]["temperature"] == 0.7
  assert (tmp_path / "defaults.png").stat().st_size > 1000


def test_short_sweep_on_a_trained_run_stores_defaults_that_sample_uses(micro_run, tmp_path):
  def small_grid(modality, slots, quick):   # one compiled program per modality: only the step count varies
    return [SamplerSpec("topk", max(2, slots // 4), 1.0), SamplerSpec("topk", max(3, slots // 2), 1.0)]

  loaded = runs.load(micro_run)
  result = defaults.sweep(loaded, tmp_path, ["text", "image"], prompts=3, prefix=8, grid_fn=small_grid)
  assert [(r["modality"], r["steps"]) for r in result["rows"]] == [("text", 30), ("text", 60), ("image", 12),
                                                                  ("image", 24)]
  for r in result["rows"]:
    assert r["nfe"] == r["steps"] and r["score"] > 0 and r["baseline_score"] > 0 and r["entropy"] > 0
  text = [r for r in result["rows"] if r["modality"] == "text"]
  assert text[0]["baseline_score"] < 1000   # real held-out text under the n-gram: a finite, modest perplexity
  assert (tmp_path / "defaults.csv").is_file() and (tmp_path / "defaults.png").is_file()
  stored = json.loads((micro_run / runs.DEFAULTS_FILE).read_text())["defaults"]
  assert stored == json.loads(json.dumps(result["chosen"])) and stored.keys() == {"text", "image"}
  prompts = ["a handwritten digit one", "a handwritten digit two", "a handwritten digit three"]
  summary = generate.generate(micro_run, "image", prompts, tmp_path / "img")
  assert summary["sampler"]["steps"] == stored["image"]["steps"] and summary["nfe"] == stored["image"]["steps"]
  (micro_run / runs.DEFAULTS_FILE).unlink()   # the session's run is shared with other tests


def test_sweep_rejects_unknown_modalities(micro_run, tmp_path, capsys):
  from labs.cli import main
  assert main(["sample-sweep", str(micro_run), "--out", str(tmp_path), "--modalities", "text,smell"]) == 2
  assert "--modality" in capsys.readouterr().err


@pytest.mark.parametrize("slots", [7, 128])
def test_grid_steps_never_exceed_one_per_slot(slots):
  assert max(s.steps for s in defaults.grid("audio", slots)) == slots
