"""End to end: `mdm-lab sample` on a model trained for a few dozen steps, for every modality; CLI errors."""
import json
import wave

import numpy as np
import pytest
from PIL import Image

from labs.cli import main


def _sample(run_dir, out, *args):
  return main(["sample", str(run_dir), "--out", str(out), "--steps", "12", *args])


def test_text_infill_keeps_prefix_and_suffix(micro_run, tmp_path):
  assert _sample(micro_run, tmp_path, "--modality", "text", "--prompt", "To be, or not",
                 "--suffix", "the question.", "--num-samples", "2", "--block-length", "40") == 0
  records = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
  summary = json.loads((tmp_path / "sample.json").read_text())
  assert len(records) == 2 and summary["nfe"] <= 12 and summary["sampler"]["block_length"] == 40
  for r in records:
    text = (tmp_path / r["file"]).read_text()
    assert text.startswith("To be, or not") and text.endswith("the question.")
    revealed = np.array(r["revealed_at"])
    slots = np.flatnonzero(revealed >= 0)   # one contiguous span between the prefix and the suffix
    assert slots[0] > 0 and slots[-1] < len(revealed) - 1 and (np.diff(slots) == 1).all()
    n_blocks = -(-len(slots) // 40)
    assert n_blocks == 3   # 12 steps: 4 per block, blocks left to right
    np.testing.assert_array_equal(revealed[slots] // 4, np.arange(len(slots)) // 40)
  assert records[0]["tokens"] != records[1]["tokens"]   # temperature 1: two different samples


def test_caption_to_image_writes_pngs_of_the_tokenizer_size(micro_run, micro_data, tmp_path):
  _, manifest = micro_data
  prompts = [arg for digit in ("seven", "two", "four") for arg in ("--prompt", f"a handwritten digit {digit}")]
  assert _sample(micro_run, tmp_path, "--modality", "image", *prompts, "--sampler", "topk") == 0
  size = manifest["tokenizers"]["image"]["height"], manifest["tokenizers"]["image"]["width"]
  for name in ("image_000.png", "image_001.png", "image_002.png"):
    with Image.open(tmp_path / name) as im:
      assert im.size == size[::-1] and im.mode == "L"


def test_transcript_to_speech_writes_wavs_of_the_requested_length(micro_run, micro_data, tmp_path):
  _, manifest = micro_data
  audio = manifest["tokenizers"]["audio"]
  assert _sample(micro_run, tmp_path, "--modality", "audio", "--prompt", "Shall I compare thee", "--length", "40",
                 "--sampler", "random") == 0
  with wave.open(str(tmp_path / "audio_000.wav")) as w:
    assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, audio["sample_rate"])
    assert w.getnframes() == (40 // audio["stages"] - 1) * audio["hop"]


def test_audio_length_without_length_follows_the_held_out_pairs(micro_run):
  """Training never masks [PAD], so the request fixes the duration: by default a line fitted to held-out pairs."""
  from mdm_jax.sampling import decode, generate, heldout, requests, runs
  cfg = runs.read_config(micro_run)
  codecs = decode.Codecs.for_config(cfg)
  val = heldout.HeldOut.for_config(cfg, ("audio",)).rows("audio")
  text_n, codes_n = requests.pair_lengths(val, cfg.vocab, "audio")
  short, long = "Shall I compare thee", "Shall I compare thee to a summer's day? Thou art more lovely"
  lengths = [int((generate.build_request(cfg, codecs, "audio", [p], 1).tokens == cfg.vocab.mask_id).sum())
             for p in (short, long)]
  slope, intercept = np.polyfit(text_n, codes_n, 1)
  for p, n in zip((short, long), lengths):
    n_text = len(codecs.text.encode(p))
    room = cfg.data.seq_len - 3 - n_text   # task token and two boundary tokens: the rest must fit
    assert abs(n - min(slope * n_text + intercept, room)) <= 1
  assert lengths[0] < lengths[1]


@pytest.mark.parametrize("args,field", [
    (["--modality", "video"], "--modality"),
    (["--modality", "text", "--steps", "0"], "--steps"),
    (["--modality", "image", "--prompt", "seven " * 200], "--prompt"),
    (["--modality", "image"], "--prompt"),
    (["--modality", "text", "--temperature", "-1"], "--temperature"),
])
def test_bad_inputs_exit_2_with_one_line(micro_run, tmp_path, capsys, args, field):
  assert main(["sample", str(micro_run), "--out", str(tmp_path), *args]) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith(f"mdm-lab: error: {field}:") and "\n" not in err


def test_missing_run_directory_is_a_user_error(tmp_path, capsys):
  assert main(["sample", str(tmp_path), "--modality", "text", "--out", str(tmp_path / "o")]) == 2
  assert "run.json" in capsys.readouterr().err
