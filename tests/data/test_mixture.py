import shutil

import numpy as np
import pytest

from mdm_jax.data import manifest as manifest_lib
from mdm_jax.data import mixture, sequences
from mdm_jax.errors import UserError


def _take(it, n):
  return [next(it) for _ in range(n)]


def test_token_shares_match_weights_over_10k_sequences(micro_dir):
  out, _ = micro_dir
  src = mixture.MixtureSource(out, {"text": 0.6, "image": 0.3, "audio": 0.1}, batch_size=100, seed=1)
  shares = mixture.TokenShares()
  for batch in _take(src.iterator(), 100):
    assert batch["tokens"].shape == (100, src.seq_len) and batch["tokens"].dtype == np.int32
    assert batch["loss_mask"].dtype == bool and batch["modality"].dtype == np.int8 and batch["prompt"].dtype == bool
    shares.update(batch)
  assert shares.sequences.sum() == 10_000
  realised = shares.shares()
  for m, w in {"text": 0.6, "image": 0.3, "audio": 0.1}.items():
    assert abs(realised[m] - w) < 0.02, realised
  # the draw probabilities differ from the token weights: pairs carry fewer non-pad tokens than packed text
  assert src.probabilities["image"] > 0.3


def test_sampling_probabilities_realise_the_token_shares():
  weights, mean = {"text": 0.6, "image": 0.3, "audio": 0.1}, {"text": 256.0, "image": 58.0, "audio": 140.0}
  p = mixture.sampling_probabilities(weights, mean)
  tokens = {m: p[m] * mean[m] for m in p}  # expected tokens per drawn sequence, by source
  total = sum(tokens.values())
  assert all(abs(tokens[m] / total - weights[m]) < 1e-12 for m in p) and abs(sum(p.values()) - 1) < 1e-12
  assert mixture.sampling_probabilities({"text": 1.0, "image": 0.0, "audio": 0.0}, mean) == {"text": 1.0}


def test_restoring_the_iterator_state_continues_with_the_same_batches(micro_dir):
  out, _ = micro_dir
  src = mixture.MixtureSource(out, (0.5, 0.3, 0.2), batch_size=8, seed=3)
  it = src.iterator()
  _take(it, 7)
  state = it.get_state()
  expected = _take(it, 4)
  fresh = mixture.MixtureSource(out, (0.5, 0.3, 0.2), batch_size=8, seed=3).iterator()
  fresh.set_state(state)
  for a, b in zip(expected, _take(fresh, 4)):
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_order_is_determined_by_the_seed(micro_dir):
  out, _ = micro_dir
  first = [next(mixture.MixtureSource(out, (0.6, 0.3, 0.1), 16, seed=s).iterator())["tokens"] for s in (0, 0, 1)]
  assert np.array_equal(first[0], first[1]) and not np.array_equal(first[0], first[2])


def test_validation_batches_are_fixed_and_per_modality(micro_dir):
  out, manifest = micro_dir
  src = mixture.MixtureSource(out, (1.0, 0.0, 0.0), batch_size=4, eval_batches=2, include_segment=True)
  assert set(src.eval) == {"text", "image", "audio"} and "segment" in src.eval["text"][0]
  for m_id, m in enumerate(("text", "image", "audio")):
    assert len(src.eval[m]) == 2
    for batch in src.eval[m]:
      np.testing.assert_array_equal(sequences.row_source(batch["modality"]), m_id)
  again = mixture.MixtureSource(out, (0.2, 0.4, 0.4), batch_size=4, eval_batches=2)
  assert np.array_equal(src.eval["audio"][1]["tokens"], again.eval["audio"][1]["tokens"])
  assert src.describe["val_batches"] == {"text": 2, "image": 2, "audio": 2}
  assert src.describe["config_hash"] == manifest["config_hash"]


@pytest.mark.parametrize("weights,field,problem", [
    ((0.7, 0.4, -0.1), "data.mixture.audio", ">= 0"),
    ((0.5, 0.3, 0.1), "data.mixture", "sum to 1"),
    ({"text": 0.5, "video": 0.5}, "data.mixture.video", "unknown modality"),
    ((0.5, 0.5), "data.mixture", "needs 3 weights"),
    ((float("nan"), 0.5, 0.5), "data.mixture.text", "finite"),
])
def test_bad_weights_name_the_field(weights, field, problem):
  with pytest.raises(UserError, match=problem) as e:
    mixture.parse_weights(weights)
  assert str(e.value).startswith(field + ":") and "\n" not in str(e.value)


def test_missing_or_corrupt_shard_and_missing_manifest_name_the_file(micro_dir, tmp_path):
  out, manifest = micro_dir
  copy = tmp_path / "copy"
  shutil.copytree(out, copy)
  shard = copy / manifest["splits"]["image"]["train"]["shards"][0]["file"]
  shard.write_bytes(shard.read_bytes()[:-8] + b"garbage!")
  with pytest.raises(UserError, match="corrupt") as e:
    mixture.MixtureSource(copy, (0.6, 0.3, 0.1), 8)
  assert str(shard) in str(e.value)
  shard.unlink()
  with pytest.raises(UserError, match="missing") as e:
    mixture.MixtureSource(copy, (0.6, 0.3, 0.1), 8)
  assert str(shard) in str(e.value)
  with pytest.raises(UserError, match="no data manifest") as e:
    mixture.MixtureSource(tmp_path / "nowhere", (0.6, 0.3, 0.1), 8)
  assert str(tmp_path / "nowhere" / manifest_lib.NAME) in str(e.value)


def test_from_config_checks_the_run_config_against_the_manifest(micro_dir):
  from mdm_jax.config import load_config  # pylint: disable=import-outside-toplevel
  out, m = micro_dir
  v = m["vocab"]
  overrides = [f"data.source={out}", f"data.seq_len={m['seq_len']}", f"data.text_vocab_size={v['text_size']}",
               f"data.image_vocab_size={v['image_size']}", f"data.audio_vocab_size={v['audio_size']}",
               "data.mixture=[0.6,0.3,0.1]", "batch.logical=8", "train.eval_batches=2"]
  cfg = load_config(None, overrides)
  src = mixture.from_config(cfg)
  assert next(src.iterator())["tokens"].shape == (8, m["seq_len"]) and len(src.eval["audio"]) == 2
  assert cfg.vocab.size == v["size"]
  with pytest.raises(UserError, match="prepared with") as e:
    mixture.from_config(load_config(None, overrides + ["data.seq_len=64"]))
  assert str(e.value).startswith("data.seq_len:")
