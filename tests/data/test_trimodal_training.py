"""A short tri-modal run on a real prepared directory lowers every modality's validation loss."""
import math

from mdm_jax import runio
from mdm_jax.config import load_config
from mdm_jax.train import train


def test_trimodal_training_lowers_each_modality_loss(micro_dir, tmp_path):
  data_dir, manifest = micro_dir
  vocab = manifest["vocab"]
  cfg = load_config("tiny", [
      f"data.source={data_dir}", f"data.seq_len={manifest['seq_len']}", f"data.text_vocab_size={vocab['text_size']}",
      f"data.image_vocab_size={vocab['image_size']}", f"data.audio_vocab_size={vocab['audio_size']}",
      "data.mixture=[0.4,0.3,0.3]", "train.steps=120", "train.log_every=20", "train.eval_every=20",
      "train.eval_batches=2", "batch.logical=16", "optim.lr=5e-3"])
  result = train(cfg, tmp_path, progress=False)
  assert result.status == "done"
  rows = [r for r in runio.read_metrics(tmp_path / "metrics.jsonl") if "eval/loss" in r]
  first, last = rows[0], rows[-1]
  for modality in ("text", "image", "audio"):
    key = f"eval/loss/{modality}"
    assert last[key] < first[key] < math.log(cfg.vocab_size), (modality, first[key], last[key])
    assert f"train/loss/{modality}" in last
