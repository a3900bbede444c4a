"""The host side of training in chunks (`mdm_jax.step.chunked`): how many steps the next device call runs, its
stacked input batches and its per-step metrics."""
import numpy as np

from mdm_jax.config import TrainConfig


def chunk_length(done: int, total: int, every: TrainConfig, event_steps=()) -> int:
  """Steps in the next call: up to `every.steps_per_call`, ending at the next log line, checkpoint, event (e.g. a
  planned fault) or the last step, so the host acts after exactly the steps it did when stepping one at a time."""
  stops = [total, (done // every.log_every + 1) * every.log_every,
           (done // every.checkpoint_every + 1) * every.checkpoint_every, *(s for s in event_steps if s > done)]
  return min(every.steps_per_call, min(stops) - done)


def stack_batches(batches: list[dict], slots: int) -> dict:
  """n host batches -> arrays with a leading axis of `slots` >= n; the slots after n are zeros (never read)."""
  out = {}
  for name, first in batches[0].items():
    stacked = np.zeros((slots, *first.shape), first.dtype)
    for i, b in enumerate(batches):
      stacked[i] = b[name]
    out[name] = stacked
  return out


def per_step(host_chunks: list[tuple[dict, int]]) -> list[dict]:
  """[(metrics stacked [S], n), ...] fetched to the host -> one metrics dict per step that ran."""
  return [{k: v[i] for k, v in metrics.items()} for metrics, n in host_chunks for i in range(n)]
