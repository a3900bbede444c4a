"""Huge pages for XLA's temp buffers: the environment plumbing, the re-exec, and the page faults it saves."""
import os
import subprocess
import sys

import pytest

from mdm_jax import hostmem

needs_thp = pytest.mark.skipif(not hostmem.wanted({}), reason="needs Linux, glibc and THP not 'never'")

# A jitted program whose 128 MiB intermediate sin(x) is XLA temp memory, run 4 times after a warm-up; prints the
# minor page faults per run.
_FAULTS = """
import resource, jax, jax.numpy as jnp
x, w = jnp.ones((4096, 8192), jnp.float32), jnp.ones((8192, 16), jnp.float32)
f = jax.jit(lambda x, w: (jnp.sin(x) @ w).sum())
f(x, w).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
  f(x, w).block_until_ready()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 4)
"""


def _run(code: str, env: dict) -> str:
  out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  return out.stdout.strip()


def _plain_env() -> dict:
  return {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", hostmem.OPT_OUT)}


def test_with_tunable_keeps_other_tunables_and_a_users_choice():
  assert hostmem.with_tunable({})["GLIBC_TUNABLES"] == hostmem.TUNABLE
  merged = hostmem.with_tunable({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
  assert merged["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:" + hostmem.TUNABLE
  assert hostmem.with_tunable(merged) == merged   # idempotent
  users = {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}
  assert hostmem.with_tunable(users) == users   # a user's own hugetlb choice wins


def test_opt_out_leaves_the_environment_alone():
  env = {"PATH": "/bin", hostmem.OPT_OUT: "0"}
  assert not hostmem.wanted(env)
  assert hostmem.child_env(env) == env


@needs_thp
def test_child_env_and_reexec_set_the_tunable():
  assert hostmem.active(hostmem.child_env(_plain_env()))
  code = "from mdm_jax import hostmem; hostmem.reexec_with_tunable(); import os; print(os.environ['GLIBC_TUNABLES'])"
  assert _run(code, _plain_env()) == hostmem.TUNABLE
  assert _run(code, {**_plain_env(), "GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}) == "glibc.malloc.hugetlb=0"


@needs_thp
def test_tunable_cuts_page_faults_of_xla_temp_buffers():
  """Without the tunable each run faults in the 128 MiB temp page by page (~32k faults); with it, ≥ 10× fewer."""
  plain = float(_run(_FAULTS, _plain_env()))
  huge = float(_run(_FAULTS, hostmem.child_env(_plain_env())))
  assert plain > 128 * 2**20 / 4096 * 0.5, plain   # the temp really is faulted in every run
  assert huge * 10 < plain, (huge, plain)
