"""Fault injection for tests: MDM_LAB_FAULTS="kind@step[,kind@step...]", optionally "run_id:kind@step".

kinds: raise (RuntimeError), interrupt (KeyboardInterrupt, as Ctrl-C), kill (SIGKILL: no cleanup at all),
nan (poison the parameters so the next step's loss is really NaN). Off unless the variable is set.
"""
import os
import signal

ENV = "MDM_LAB_FAULTS"
KINDS = ("raise", "interrupt", "kill", "nan")


def planned(run_id: str) -> dict[int, str]:
  """{step: kind} for this run."""
  out = {}
  for item in filter(None, (s.strip() for s in os.environ.get(ENV, "").split(","))):
    target, _, spec = item.rpartition(":")
    if target and target != run_id:
      continue
    kind, _, step = spec.partition("@")
    if kind not in KINDS or not step.isdigit():
      raise ValueError(f"{ENV}: bad fault {item!r}; use kind@step with kind in {KINDS}")
    out[int(step)] = kind
  return out


def inject(kind: str, state):
  """Apply a fault after the step that just completed; returns the (possibly poisoned) state."""
  if kind == "raise":
    raise RuntimeError("injected fault: raise")
  if kind == "interrupt":
    raise KeyboardInterrupt
  if kind == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
  if kind == "nan":
    import jax
    import jax.numpy as jnp
    return {**state, "params": jax.tree.map(lambda x: x * jnp.nan, state["params"])}
  return state
