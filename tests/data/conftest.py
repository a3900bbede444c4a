"""Shared fixtures for the data tests: one small but real prepared directory per test session."""
import dataclasses

import pytest

from mdm_jax.data import prepare, sets

# Real sources and code paths, sized so the whole build takes seconds: embedded text and digits, eSpeak speech.
MICRO = dataclasses.replace(
    sets.SETS["tiny"], name="micro", seq_len=128, text_size=512, image_codebook=64, audio_codebook=64,
    audio_train_utterances=48, audio_val_utterances=16, audio_codebook_utterances=32, audio_max_seconds=1.8,
    recon_images=100, recon_utterances=4, kmeans_iters=10, records_per_shard=256, text_documents=4,
    audio_stoi=False)


@pytest.fixture(scope="session")
def micro_config():
  return MICRO


@pytest.fixture(scope="session")
def micro_dir(tmp_path_factory):
  out = tmp_path_factory.mktemp("micro-data")
  manifest, rebuilt = prepare.prepare(out, MICRO, progress=False, workers=2)
  assert rebuilt
  _BUILT.append((out, manifest))
  return out, manifest


def pytest_terminal_summary(terminalreporter):
  """How long the shared micro build took (it dominates this directory's runtime)."""
  for out, manifest in _BUILT:
    terminalreporter.write_line(f"micro data build: {manifest['timings']}")


_BUILT = []
