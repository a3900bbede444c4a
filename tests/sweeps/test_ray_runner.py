"""The Ray runner on a real local Ray (loopback only, no dashboard): results equal the in-process runner's."""
import pytest

from labs.cli import main
from sweeps.index import Index
from tests.sweeps.conftest import assert_same_losses, final_losses

pytest.importorskip("ray")


@pytest.fixture(scope="session")
def local_ray():
  """One Ray per test session (starting one costs seconds), stopped with its temp dir at the end."""
  from sweeps.ray_runner import ray_session
  with ray_session(num_cpus=2) as ray:
    yield ray


def test_ray_runner_reproduces_the_in_process_sweep(local_ray, reference, tmp_path):
  node = local_ray.nodes()[0]
  assert node["NodeManagerAddress"] == "127.0.0.1"   # every listener on loopback (DISTRIBUTED.md §1)
  out = tmp_path / "sweep"
  assert main(["sweep", "run", str(reference["spec"]), "--out", str(out), "--runner", "ray", "--no-progress"]) == 0
  assert local_ray.is_initialized()   # the runner used the session's Ray and left it running
  got = final_losses(out)
  assert sorted(got) == sorted(reference["losses"])
  for run_id, losses in reference["losses"].items():
    assert_same_losses(got[run_id], losses)
  index = Index(out)
  starts = [e for e in index.events() if e["event"] == "start"]
  assert len(starts) == 3 and all(e["detail"].startswith("ray") for e in starts)
