import dataclasses
import json

import numpy as np
import pytest

from labs import cli
from mdm_jax.data import manifest as manifest_lib
from mdm_jax.data import prepare, sequences, sets, shards, text
from mdm_jax.data.image_tokenizer import ImageTokenizer
from mdm_jax.data.vocab import MODALITIES


def _rows(out, manifest, modality, split):
  entries = manifest["splits"][modality][split]["shards"]
  return shards.ShardSource(out, entries, manifest["seq_len"]).read_all()


def test_manifest_records_counts_licences_checksums_and_vocab(micro_dir):
  out, m = micro_dir
  vocab = manifest_lib.vocab(m)
  assert m["vocab"]["table"] == vocab.table() and vocab.size == m["vocab"]["size"]
  assert (vocab.text_size, vocab.image_size, vocab.audio_size) == (512, 64, 64)
  for name in ("shakespeare14", "mnist1k", "espeak-ng"):
    assert m["sources"][name]["data_licence"]
  for modality in MODALITIES:
    for split in ("train", "val"):
      info = m["splits"][modality][split]
      assert info["sequences"] == sum(e["records"] for e in info["shards"]) > 0
      assert all(shards.sha256_file(out / e["file"]) == e["sha256"] for e in info["shards"])
  for t in m["tokenizers"].values():
    assert shards.sha256_file(out / t["file"]) == t["file_sha256"] and t["version"]
  assert m["tokenizers"]["image"]["tokens_per_image"] == 49 and m["tokenizers"]["audio"]["tokens_per_second"] == 50
  assert {"mse", "psnr_db"} <= set(m["reconstruction"]["image"])
  assert {"feature_rms_db", "waveform_lsd_db"} <= set(m["reconstruction"]["audio"])
  assert m["sizes"]["bytes_total"] == sum((out / f).stat().st_size for f in _all_files(m))


def _all_files(m):
  return [e["file"] for s in m["splits"].values() for v in s.values() for e in v["shards"]] + \
         [t["file"] for t in m["tokenizers"].values()]


def test_rows_follow_the_layout(micro_dir):
  out, m = micro_dir
  vocab = manifest_lib.vocab(m)
  for m_id, modality in enumerate(MODALITIES):
    rows = _rows(out, m, modality, "val")
    np.testing.assert_array_equal(rows["loss_mask"], rows["tokens"] != vocab.pad_id)
    np.testing.assert_array_equal(sequences.row_source(rows["modality"]), m_id)
    content = vocab.content_modality(rows["tokens"])
    is_content = content >= 0
    np.testing.assert_array_equal(content[is_content], rows["modality"][is_content])
    mean = m["splits"][modality]["val"]["mean_nonpad_tokens"]
    assert abs(rows["loss_mask"].sum(1).mean() - mean) < 1e-9


def test_text_round_trip_is_exact_and_pairs_decode(micro_dir):
  out, m = micro_dir
  tok = text.TextTokenizer(out / m["tokenizers"]["text"]["file"])
  held_out = "Shall I compare thee to a summer's day?\nThou art more lovely and more temperate: 1609."
  assert tok.decode(tok.encode(held_out)) == held_out
  vocab = manifest_lib.vocab(m)
  image_rows = _rows(out, m, "image", "val")
  row = image_rows["tokens"][0]
  text_ids = row[1:list(row).index(vocab.id("<img>"))]
  assert tok.decode(text_ids).startswith("a handwritten digit ")
  image_tok = ImageTokenizer.load(out / m["tokenizers"]["image"]["file"])
  lo = vocab.range("image")[0]
  codes = row[(row >= lo) & (row < lo + vocab.image_size)] - lo
  assert image_tok.decode(codes[None]).shape == (1, 28, 28, 1)
  audio_row = _rows(out, m, "audio", "val")["tokens"][0]
  transcript = tok.decode(audio_row[1:list(audio_row).index(vocab.id("<aud>"))])
  assert len(transcript.split()) >= 1 and transcript[0].isupper()


def test_rerun_is_a_no_op_and_a_config_change_is_not(micro_dir, micro_config):
  out, m = micro_dir
  again, rebuilt = prepare.prepare(out, micro_config, progress=False)
  assert not rebuilt and again == m
  assert not prepare.is_current(out, dataclasses.replace(micro_config, seed=1))


def test_same_seed_gives_byte_identical_shards(tmp_path, micro_config):
  nano = dataclasses.replace(micro_config, name="nano", text_documents=2, audio_train_utterances=12, audio_val_utterances=6,
                             audio_codebook_utterances=12, recon_images=10, recon_utterances=1, kmeans_iters=4)
  a, _ = prepare.prepare(tmp_path / "a", nano, progress=False, workers=2)
  b, _ = prepare.prepare(tmp_path / "b", nano, progress=False, workers=1)
  assert a["config_hash"] == b["config_hash"]
  assert json.dumps(a["splits"], sort_keys=True) == json.dumps(b["splits"], sort_keys=True)
  assert {k: t["file_sha256"] for k, t in a["tokenizers"].items()} == \
         {k: t["file_sha256"] for k, t in b["tokenizers"].items()}


@pytest.mark.parametrize("argv,field", [(["--set", "nope"], "--set"), (["--seq-len", "10"], "--seq-len")])
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, field):
  assert cli.main(["data", "prepare", "--out", str(tmp_path), *argv]) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith(f"mdm-lab: error: {field}:") and "\n" not in err


def test_named_sets_are_consistent():
  for name, cfg in sets.SETS.items():
    assert cfg.name == name and cfg.seq_len >= 64 and cfg.audio_size == cfg.audio_codebook * cfg.audio_stages
