"""Run in a subprocess with 8 fake CPU devices: compile the tiny train program under fsdp (the trainer's: steps in a
device loop, `train_chunk`), print facts of its HLO as JSON.

Printed: every all-gather (result shape, dtype, whether each of its uses ends in a matmul after layout-only ops),
every parameter's global shape and partition spec, and the partition specs of the step's parameter and Adam-moment
outputs. tests/mdm_jax/test_fsdp_hlo.py asserts on them.
"""
import json
import os
import re
import sys

_INSTR = re.compile(r"^\s*(?:ROOT\s+)?%([\w.-]+) = (.+?) ([a-z][a-z0-9-]*)\((.*)$")
_LAYOUT_ONLY = {"copy", "bitcast", "transpose", "reshape"}


def parse_hlo(text: str) -> tuple[dict, dict]:
  """({instruction: (shape, opcode, operands, called computations, line)}, {computation: [opcodes]})."""
  instrs, comps, current = {}, {}, None
  for line in text.splitlines():
    header = re.match(r"^(?:ENTRY )?%([\w.-]+) .*\{$", line)
    if header:
      current = comps.setdefault(header.group(1), [])
      continue
    m = _INSTR.match(line)
    if not m:
      continue
    name, shape, opcode, rest = m.groups()
    depth, end = 1, 0
    for end, ch in enumerate(rest):   # the operand list ends at the matching parenthesis
      depth += {"(": 1, ")": -1}.get(ch, 0)
      if depth == 0:
        break
    operands = re.findall(r"%([\w.-]+)", rest[:end])
    called = re.findall(r"(?:calls|to_apply)=%([\w.-]+)", rest[end:])
    instrs[name] = (shape, opcode, operands, called, line)
    if current is not None:
      current.append(opcode)
  return instrs, comps


def feeds_only_matmuls(name: str, instrs: dict, comps: dict, users: dict) -> bool:
  """True when every path from `name` through layout-only ops (copies, bitcasts, transposes, fusions of those)
  ends in a matmul (a dot, or a fusion containing one or a custom matmul fusion)."""
  for user in users.get(name, []):
    _, opcode, _, called, line = instrs[user]
    ops = {op for c in called for op in comps.get(c, [])}
    if opcode == "dot" or (opcode == "fusion" and ("dot" in ops or "kind=kCustom" in line)):   # kCustom: YNN dot
      continue
    if opcode in _LAYOUT_ONLY or (opcode == "fusion" and ops and ops <= _LAYOUT_ONLY | {"parameter"}):
      if feeds_only_matmuls(user, instrs, comps, users):
        continue
    return False
  return bool(users.get(name))


def main(mesh_shape: str):
  import jax   # imported here: the parser above is used by the test process too, whose jax must stay untouched
  import numpy as np
  from mdm_jax import optim, sharding, step
  from mdm_jax.config import load_config
  d, f, t = (int(x) for x in mesh_shape.split("x"))
  cfg = load_config("tiny", ["batch.logical=16", "batch.physical=16", f"mesh.data={d}", f"mesh.fsdp={f}",
                             f"mesh.tensor={t}"])
  mesh = sharding.make_mesh(cfg.mesh)
  steps = step.build(cfg, mesh)
  with jax.set_mesh(mesh):
    state = jax.eval_shape(steps.init.jitted, step.seed_key(0), optim.hyper_arrays(optim.hyperparams(cfg)))
    shape = (cfg.train.steps_per_call, 1, cfg.batch.logical, cfg.data.seq_len)
    batches = {"tokens": jax.ShapeDtypeStruct(shape, np.int32), "loss_mask": jax.ShapeDtypeStruct(shape, bool),
               "modality": jax.ShapeDtypeStruct(shape, np.int8)}
    compiled = steps.train_chunk.jitted.lower(state, batches, np.int32(1)).compile()
  text = compiled.as_text()
  instrs, comps = parse_hlo(text)
  users: dict = {}
  for name, (_, _, operands, _, _) in instrs.items():
    for op in set(operands):
      users.setdefault(op, []).append(name)
  gathers = [{"shape": [int(x) for x in re.findall(r"\d+", s.split("{")[0].split("[", 1)[1])],
              "dtype": s.split("[")[0], "feeds_only_matmuls": feeds_only_matmuls(n, instrs, comps, users)}
             for n, (s, op, *_) in instrs.items() if op in ("all-gather", "all-gather-start")]
  spec = lambda s: [list(p) if isinstance(p, tuple) else p for p in s.spec]
  out = compiled.output_shardings[0]
  params = [{"shape": list(x.shape), "spec": spec(s)}
            for x, s in zip(jax.tree.leaves(state["params"]), jax.tree.leaves(steps.state_sharding["params"]))]
  print(json.dumps({"gathers": gathers, "params": params,
                    "out_params": [spec(s) for s in jax.tree.leaves(out["params"])],
                    "out_mu": [spec(s) for s in jax.tree.leaves(out["opt"].mu)],
                    "out_nu": [spec(s) for s in jax.tree.leaves(out["opt"].nu)]}))


if __name__ == "__main__":
  os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"   # before jax is imported
  os.environ["JAX_PLATFORMS"] = "cpu"
  main(sys.argv[1])
