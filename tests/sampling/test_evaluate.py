"""ELBO estimates against closed forms, their standard errors against repeated runs, and the sample metrics."""
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mdm_jax.config import DiffusionConfig
from mdm_jax.sampling import evaluate

V, MASK, B, L = 9, 8, 12, 16


def _fixed(logits_LxV, tokens_BxL):
  return jnp.broadcast_to(logits_LxV, tokens_BxL.shape + logits_LxV.shape[-1:])


def _batch_and_exact():
  """A batch with pads, prompts and two modalities, and its exact NELBO under an input-independent denoiser.

  With α_t = 1 − t, w(t)·P(masked | t) = (1/t)·t = 1 at every t, so the NELBO of a sequence is exactly the sum of
  the per-position cross-entropies over its maskable (non-pad, non-prompt) positions.
  """
  rng = np.random.default_rng(0)
  logits = rng.normal(0, 1.5, (L, V)).astype(np.float32)
  tokens = rng.integers(0, MASK, (B, L)).astype(np.int32)
  loss_mask = np.ones((B, L), bool)
  loss_mask[:, -3:] = False
  prompt = np.zeros((B, L), bool)
  prompt[: B // 2, :2] = True
  modality = np.zeros((B, L), np.int8)
  modality[:, L // 2:] = 1
  lp = logits[:, :MASK] - np.log(np.exp(logits[:, :MASK].astype(np.float64)).sum(1, keepdims=True))
  ce = -lp[np.arange(L)[None, :], tokens]
  scored = loss_mask & ~prompt
  exact = {m: (ce * scored * (modality == i)).sum() / (loss_mask * (modality == i)).sum()
           for i, m in enumerate(("text", "image"))}
  batch = {"tokens": tokens, "loss_mask": loss_mask, "prompt": prompt, "modality": modality}
  return jax.tree_util.Partial(_fixed, jnp.asarray(logits)), batch, exact


def test_elbo_is_unbiased_and_its_monte_carlo_error_is_calibrated():
  apply, batch, exact = _batch_and_exact()
  runs = [evaluate.elbo(apply, [batch, batch], DiffusionConfig(), MASK, t_samples=8, seed=s) for s in range(16)]
  for m in ("text", "image"):
    values = np.array([r[m]["nats_per_token"] for r in runs])
    se_mc = np.mean([r[m]["se_mc"] for r in runs])
    assert abs(values.mean() - exact[m]) < 4 * se_mc / np.sqrt(len(runs))
    assert 0.6 < values.std(ddof=1) / se_mc < 1.5   # one run's se_mc predicts the spread across runs
    assert runs[0][m]["se"] > 0 and runs[0][m]["sequences"] == 2 * B
  assert "audio" not in runs[0]


def test_ratio_se_reduces_to_the_standard_error_of_a_mean():
  num = np.random.default_rng(3).normal(5, 2, 50)
  out = evaluate.ratio_with_se(num, np.full(50, 4.0), np.zeros(50), np.zeros(50))
  assert out["nats_per_token"] == pytest.approx(num.mean() / 4)
  assert out["se"] == pytest.approx(num.std(ddof=1) / np.sqrt(50) / 4)


@pytest.mark.parametrize("schedule", ["linear", "cosine", "polynomial", "loglinear"])
def test_single_t_variance_matches_quadrature(schedule):
  """Uniform logits over the 8 real ids make every masked position cost c = ln 8, so a sequence of n tokens has
  NELBO(t) = c·w(t)·Bin(n, m(t)) (m = 1 − α): Var = c²·(n·E[w²m(1−m)] + n²·Var[w·m]) over t ~ U[ε, 1)."""
  from scipy import integrate
  from mdm_jax import diffusion
  dcfg = DiffusionConfig(schedule=schedule, sampling_eps=0.05)
  n, rows, c = 16, 256, math.log(MASK)
  w = lambda t: float(diffusion.weight(dcfg, t))
  m = lambda t: float(diffusion.mask_prob(dcfg, t))
  mean = lambda f: integrate.quad(f, dcfg.sampling_eps, 1, limit=200)[0] / (1 - dcfg.sampling_eps)
  wm = mean(lambda t: w(t) * m(t))
  want = c ** 2 * (mean(lambda t: w(t) ** 2 * m(t) * (1 - m(t))) + n * (mean(lambda t: (w(t) * m(t)) ** 2) - wm ** 2))
  batch = {"tokens": np.zeros((rows, n), np.int32), "loss_mask": np.ones((rows, n), bool),
           "modality": np.zeros((rows, n), np.int8)}
  apply = jax.tree_util.Partial(_fixed, jnp.zeros((n, V)))
  got = [evaluate.elbo(apply, [batch], dcfg, MASK, t_samples=8, seed=s)["text"]["single_t_var"] for s in range(3)]
  assert np.mean(got) == pytest.approx(want, rel=0.1), (got, want)


def test_odd_t_samples_are_refused():
  apply, batch, _ = _batch_and_exact()
  with pytest.raises(evaluate.UserError, match="--t-samples"):
    evaluate.elbo(apply, [batch], DiffusionConfig(), MASK, t_samples=7)


def test_token_entropy_of_uniform_and_repeated_samples():
  assert evaluate.token_entropy([[1, 2, 3, 4], [5, 5, 5, 5]]) == pytest.approx(np.log(4) / 2)


def test_nearest_neighbour_distance_by_brute_force():
  rng = np.random.default_rng(0)
  gen, ref = rng.normal(size=(5, 3)), rng.normal(size=(7, 3))
  groups_gen, groups_ref = np.array([0, 1, 0, 1, 2]), np.array([0, 0, 1, 1, 1, 0, 0])
  want = [min(np.mean((g - r) ** 2) for j, r in enumerate(ref) if groups_ref[j] == groups_gen[i] and j != i)
          for i, g in enumerate(gen) if groups_gen[i] != 2]   # group 2 has no reference: skipped
  got = evaluate.nn_distance(gen, ref, groups_gen, groups_ref, exclude=np.arange(5))
  assert got == pytest.approx(np.mean(want))


def test_elbo_agrees_with_the_trainers_evaluation_of_the_same_batches(micro_run):
  """Two estimators of one quantity: 16 stratified random times here, the trainer's 8-point midpoint grid with a
  fixed mask there. Its Monte Carlo error is about √2 times ours (half the points), so the difference should stay
  within 4 standard errors of √3 · se_mc."""
  from mdm_jax.data import pipeline
  from mdm_jax.sampling import runs
  loaded = runs.load(micro_run)
  batches = [b for group in pipeline.DataSource(loaded.cfg).eval.values() for b in group]
  mine = evaluate.elbo(loaded.apply, batches, loaded.cfg.diffusion, loaded.vocab.mask_id, t_samples=16)
  final = json.loads((micro_run / "run.json").read_text())["final"]
  for m, key in (("text", "eval/loss/text"), ("image", "eval/loss/image"), ("audio", "eval/loss/audio"),
                 ("all", "eval/loss")):
    assert abs(mine[m]["nats_per_token"] - final[key]) < 4 * math.sqrt(3) * mine[m]["se_mc"], (m, mine[m], final)


def test_elbo_command_prints_and_writes_each_modality(micro_run, tmp_path, capsys):
  from labs.cli import main
  assert main(["elbo", str(micro_run), "--t-samples", "16", "--json", str(tmp_path / "elbo.json")]) == 0
  out = json.loads((tmp_path / "elbo.json").read_text())
  assert {"text", "image", "audio", "all"} <= out.keys() and out["t_samples"] == 16
  assert capsys.readouterr().out.count("nats/token") == 4
