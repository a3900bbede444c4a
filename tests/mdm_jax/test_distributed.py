"""One training job as 2 jax.distributed CPU processes on localhost equals the single-process run."""
import pytest

from mdm_jax import distributed, runio
from mdm_jax.config import load_config
from mdm_jax.train import train

TINY = ["model.d_model=32", "model.n_layers=2", "model.n_heads=1", "model.d_ff=128", "data.seq_len=32",
        "batch.logical=4", "batch.physical=4", "train.steps=6", "train.log_every=2", "train.eval_every=6",
        "train.checkpoint_every=3", "train.eval_batches=1", "diffusion.eval_t_points=2", "train.peak_flops=1e11"]


def test_two_process_job_matches_the_single_process_run(tmp_path):
  cfg = load_config("tiny", TINY)
  single = train(cfg, tmp_path / "single", progress=False)
  multi = distributed.train_local(cfg, tmp_path / "multi", num_processes=2, timeout=600)
  assert (single.status, multi.status) == ("done", "done")
  run = runio.read_json(tmp_path / "multi" / runio.RUN_JSON)
  assert run["hardware"]["process_count"] == 2 and run["hardware"]["mesh"]["data"] == 2
  a = runio.read_metrics(tmp_path / "multi" / runio.METRICS)
  b = runio.read_metrics(tmp_path / "single" / runio.METRICS)
  assert [r["step"] for r in a] == [r["step"] for r in b]   # rank 0 alone wrote the log: no duplicate lines
  for x, y in zip(a, b):
    assert x["train/loss"] == pytest.approx(y["train/loss"], abs=1e-5)
  assert a[-1]["eval/loss"] == pytest.approx(b[-1]["eval/loss"], abs=1e-5)
  assert "rank 0/2] done" in (tmp_path / "multi" / "rank0.log").read_text()


def test_a_failing_rank_raises_with_its_log(tmp_path):
  bad = load_config("tiny", TINY + ["batch.logical=3", "batch.physical=3"])   # 3 rows cannot split over 2 ranks
  with pytest.raises(RuntimeError, match="exit codes"):
    distributed.train_local(bad, tmp_path, num_processes=2, timeout=300)
