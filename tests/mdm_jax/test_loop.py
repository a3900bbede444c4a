"""Training in chunks of steps per device call: chunk lengths, stacking, and results equal to one step per call."""
import jax
import numpy as np

from mdm_jax import checkpoint, runio
from mdm_jax.config import load_config
from mdm_jax.loop import chunk_length, per_step, stack_batches
from mdm_jax.train import train


def test_chunks_end_at_every_log_checkpoint_event_and_the_last_step():
  every = load_config("tiny", ["train.log_every=10", "train.checkpoint_every=25", "train.steps_per_call=8"]).train
  ends, done = [], 0
  while done < 37:
    done += chunk_length(done, 37, every, event_steps=(13,))
    ends.append(done)
  assert ends == [8, 10, 13, 20, 25, 30, 37]   # 8 at most; stops at logs (10s), checkpoints (25s), 13 and 37


def test_stacking_pads_with_zeros_and_per_step_unstacks():
  batches = [{"tokens": np.full((1, 2, 3), i + 1, np.int32), "loss_mask": np.ones((1, 2, 3), bool)} for i in range(3)]
  stacked = stack_batches(batches, 5)
  assert stacked["tokens"].shape == (5, 1, 2, 3) and stacked["loss_mask"].dtype == bool
  assert stacked["tokens"][:, 0, 0, 0].tolist() == [1, 2, 3, 0, 0] and not stacked["loss_mask"][3:].any()
  rows = per_step([({"loss": np.array([1.0, 2.0, 0.0])}, 2), ({"loss": np.array([3.0, 0.0, 0.0])}, 1)])
  assert [r["loss"] for r in rows] == [1.0, 2.0, 3.0]


def test_a_run_in_chunks_equals_the_run_one_step_per_call(tmp_path):
  base = ["train.steps=12", "train.log_every=10", "train.eval_every=10", "train.checkpoint_every=10",
          "train.eval_batches=1", "model.n_layers=1", "model.d_ff=256", "data.seq_len=64",
          "diffusion.eval_t_points=2"]
  one = load_config("tiny", base + ["train.steps_per_call=1"])
  chunks = load_config("tiny", base + ["train.steps_per_call=4"])   # calls of 4, 4, 2 | 2 steps
  assert one.fingerprint() == chunks.fingerprint()   # how steps are dispatched is not part of the run's identity
  for cfg, name in ((one, "one"), (chunks, "chunks")):
    assert train(cfg, tmp_path / name, progress=False).status == "done"
  rows = [runio.read_metrics(tmp_path / name / "metrics.jsonl") for name in ("one", "chunks")]
  assert [r["step"] for r in rows[1]] == [10, 12]
  for key in ("train/loss", "optim/grad_norm", "eval/loss"):
    assert [r[key] for r in rows[0]] == [r[key] for r in rows[1]], key
  a, b = checkpoint.load_params(tmp_path / "one"), checkpoint.load_params(tmp_path / "chunks")
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)
