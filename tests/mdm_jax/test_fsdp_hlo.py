"""The compiled fsdp train step keeps parameters sharded: checked on its optimized HLO (8 fake devices).

A full parameter may exist only as the all-gathered input of the matmuls that use it (ZeRO-3): every float
all-gather must produce exactly one parameter, feed only matmuls, and happen at most twice per parameter (forward and
backward); the step's parameter and Adam-moment outputs keep the fsdp partition specs.
"""
import importlib.util
import json
import math
import os
import pathlib
import subprocess
import sys

import pytest

HERE = pathlib.Path(__file__).parent
_spec = importlib.util.spec_from_file_location("fsdp_hlo", HERE / "fsdp_hlo.py")
fsdp_hlo = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fsdp_hlo)


@pytest.fixture(scope="module")
def facts():
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  out = subprocess.run([sys.executable, str(HERE / "fsdp_hlo.py"), "1x8x1"], env=env, capture_output=True, text=True,
                       timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  return json.loads(out.stdout.strip().splitlines()[-1])


def _sharded(spec) -> bool:
  return any(p == "fsdp" or (isinstance(p, list) and "fsdp" in p) for p in spec)


def test_every_gathered_float_is_one_parameter_feeding_only_matmuls(facts):
  sharded = [p for p in facts["params"] if _sharded(p["spec"])]
  floats = [g for g in facts["gathers"] if g["dtype"].startswith(("f", "bf"))]
  assert floats, "no parameter all-gathers at all: is the step really compiled under fsdp?"
  shapes = {tuple(p["shape"]) for p in sharded}
  for g in floats:
    assert tuple(g["shape"]) in shapes, f"all-gather of {g['shape']} is not one parameter"
    assert g["feeds_only_matmuls"], f"a gathered {g['shape']} parameter reaches a non-matmul op"
  gathered = sum(math.prod(g["shape"]) for g in floats)
  assert gathered <= 2 * sum(math.prod(p["shape"]) for p in sharded)   # once for the forward, once for the backward


def test_parameter_and_moment_outputs_keep_their_fsdp_specs(facts):
  specs = [p["spec"] for p in facts["params"]]
  assert sum(map(_sharded, specs)) >= len(specs) // 2   # every matrix (norm scales stay whole)
  assert facts["out_params"] == specs
  assert facts["out_mu"] == specs and facts["out_nu"] == specs


def test_the_checker_flags_a_gathered_parameter_that_reaches_the_optimizer():
  hlo = """
ENTRY %main (p0: f32[16,128], p1: f32[128,128], p2: f32[128,128]) -> f32[128,128] {
  %p0 = f32[16,128]{1,0} parameter(0)
  %p1 = f32[16,128]{1,0} parameter(1)
  %ag = f32[128,128]{1,0} all-gather(%p1), channel_id=1, dimensions={0}
  %cp = f32[128,128]{0,1} copy(%ag)
  %mm = f32[16,128]{1,0} dot(%p0, %cp), lhs_contracting_dims={1}, rhs_contracting_dims={0}
  %ag2 = f32[128,128]{1,0} all-gather(%p1), channel_id=2, dimensions={0}
  %upd = f32[128,128]{1,0} add(%ag2, %ag2)
}
"""
  instrs, comps = fsdp_hlo.parse_hlo(hlo)
  users = {}
  for name, (_, _, operands, _, _) in instrs.items():
    for op in set(operands):
      users.setdefault(op, []).append(name)
  assert fsdp_hlo.feeds_only_matmuls("ag", instrs, comps, users)
  assert not fsdp_hlo.feeds_only_matmuls("ag2", instrs, comps, users)
