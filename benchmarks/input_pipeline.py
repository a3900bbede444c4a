"""Input-pipeline benchmark: tokens/s delivered by the tri-modal mixture pipeline vs tokens/s the train step consumes.

  python benchmarks/input_pipeline.py [--data DIR] [--weights 0.6,0.3,0.1] [--batch 16] [--seconds 5]
                                      [--step-json FILE] [--size small]

Prints one JSON line with pipeline_tokens_per_s (sequence positions per second, as the step consumes B x L per step),
pipeline_nonpad_tokens_per_s, the realised token shares, and step_tokens_per_s: the mdm-lab train step's tokens/s
read from a `benchmarks/train_step.py` output file (JSON lines) for --size, or null with the reason. The target is
pipeline >= 5x step (training is never input-bound). Without --data, the `tiny` set is prepared once into the cache.
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run as a script from anywhere


def _step_tokens_per_s(path: str | None, size: str) -> tuple[float | None, str | None]:
  if not path:
    return None, "no --step-json given (run benchmarks/train_step.py --impls mdm-lab and pass its output)"
  if not os.path.isfile(path):
    return None, f"{path} not found"
  with open(path) as f:
    for line in f:
      try:
        row = json.loads(line)
      except json.JSONDecodeError:
        continue  # a torn or progress line
      if row.get("impl") == "mdm-lab" and row.get("name") == size:
        if "tokens_per_s" in row:
          return float(row["tokens_per_s"]), None
        return None, f"mdm-lab step skipped in {path}: {row.get('skipped', 'no tokens_per_s')}"
  return None, f"no mdm-lab line for size {size!r} in {path}"


def _data_dir(arg: str | None) -> str:
  if arg:
    return arg
  from mdm_jax.data import prepare, sets, text  # pylint: disable=import-outside-toplevel
  out = text.cache_dir() / "data" / "tiny"
  prepare.prepare(out, sets.get("tiny"), progress=True, workers=2)
  return str(out)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--data", default=None, help="a directory made by `mdm-lab data prepare`")
  p.add_argument("--weights", default="0.6,0.3,0.1", help="non-pad token shares of text,image,audio")
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--seconds", type=float, default=5.0, help="measurement time")
  p.add_argument("--step-json", default=None, help="output of benchmarks/train_step.py")
  p.add_argument("--size", default="small", help="model size whose step rate to compare with")
  args = p.parse_args(argv)

  from mdm_jax.data import mixture  # pylint: disable=import-outside-toplevel
  data = _data_dir(args.data)
  weights = [float(w) for w in args.weights.split(",")]
  src = mixture.MixtureSource(data, weights, batch_size=args.batch, seed=0)
  it = src.iterator()
  for _ in range(5):  # warm-up: opens the shards, starts any prefetch
    next(it)
  shares = mixture.TokenShares()
  batches, start = 0, time.perf_counter()
  while (elapsed := time.perf_counter() - start) < args.seconds or batches < 10:
    shares.update(next(it))
    batches += 1
  positions_per_s = batches * args.batch * src.seq_len / elapsed
  step, reason = _step_tokens_per_s(args.step_json, args.size)
  row = {"pipeline_tokens_per_s": positions_per_s,
         "pipeline_nonpad_tokens_per_s": float(shares.tokens.sum()) / elapsed,
         "pipeline_batches_per_s": batches / elapsed, "batch": args.batch, "seq_len": src.seq_len,
         "weights": dict(zip(("text", "image", "audio"), weights)), "realised_token_shares": shares.shares(),
         "step_tokens_per_s": step, "step_size": args.size,
         "pipeline_over_step": positions_per_s / step if step else None, "target_ratio": 5.0, "data": data}
  if reason:
    row["step_reason"] = reason
  print(json.dumps(row), flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
