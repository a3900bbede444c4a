"""Test-session defaults: CPU only, a private cache for tokenizers, quiet JAX."""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
  """Tokenizers and encoded corpora are cached per test session (never in the user's ~/.cache)."""
  if "MDM_LAB_CACHE" not in os.environ:
    os.environ["MDM_LAB_CACHE"] = str(tmp_path_factory.mktemp("mdm-lab-cache"))
  yield
