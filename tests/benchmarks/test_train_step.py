"""The benchmark CLI's argument checks, size resolution and ceiling bookkeeping (the timing itself is not tested)."""

import pytest

from benchmarks import sizes, train_step
from mdm_jax.errors import UserError


def test_reference_is_always_measured():
  args = train_step.parse_args(["--sizes", "tiny", "--impls", "jax-probe"])
  assert args.sizes == ["tiny"] and args.impls == ["torch-compile", "jax-probe"]


@pytest.mark.parametrize("argv, field", [(["--sizes", "huge"], "--sizes"), (["--impls", "tf"], "--impls"),
                                         (["--sizes", ","], "--sizes"), (["--rounds", "0"], "--rounds")])
def test_bad_arguments_name_the_flag(argv, field):
  with pytest.raises(UserError) as e:
    train_step.parse_args(argv)
  assert e.value.field == field


def test_resolve_names_dicts_and_overrides():
  assert sizes.resolve("small") == sizes.SIZES["small"]
  cfg = sizes.resolve({"d": 64, "n_layers": 1, "n_heads": 2, "ff": 128, "vocab": 100}, batch=4, seq=32)
  assert (cfg.head_dim, cfg.mask_id, cfg.tokens_per_step) == (32, 99, 128)
  with pytest.raises(UserError):
    sizes.resolve("medium")


def test_fixed_batch_never_holds_the_mask_id():
  cfg = sizes.resolve({"d": 8, "n_layers": 1, "n_heads": 1, "ff": 8, "vocab": 3}, batch=64, seq=64)
  batch = sizes.fixed_batch(cfg)
  assert batch.shape == (64, 64) and set(batch.ravel().tolist()) == {0, 1}


def test_keep_best_keeps_the_highest_ceiling_and_its_load():
  ceilings = {}
  train_step.keep_best(ceilings, "numpy", {"flops_per_s": 1e11, "other_cores": 0.01})
  train_step.keep_best(ceilings, "numpy", {"flops_per_s": 9e10, "other_cores": 0.0})
  train_step.keep_best(ceilings, "jax", {"flops_per_s": 2e11, "other_cores": 0.5})
  assert ceilings == {"numpy": {"flops_per_s": 1e11, "other_cores": 0.01},
                      "jax": {"flops_per_s": 2e11, "other_cores": 0.5}}
