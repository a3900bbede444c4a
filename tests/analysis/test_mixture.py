"""Mixture laws: analytic gradients, recovery of a noise-free additive law, the joint law's better fit and its
scale-dependent optimal mix (METHOD §5.6)."""
import itertools

import numpy as np
import pandas as pd
import pytest

from analysis import mixture
from analysis.table import from_frame
from mdm_jax.errors import UserError

X_ADDITIVE = [np.log(1.7), np.log(400), 0.34, np.log(2000), 0.36, np.log(2.0), np.log(1.0), np.log(0.5), 0.5, 0.3, 0.8]
X_JOINT = [np.log(1.7), np.log(300), np.log(600), np.log(400), 0.34, np.log(1000), np.log(3000), np.log(2000), 0.36,
           np.log(2.0), np.log(1.0), np.log(0.5), 0.5, 0.3, 0.8]
DOMAINS = ["mix_text", "mix_image", "mix_audio"]


def mixture_frame(form, x, step=4):
  """3 sizes x 3 token counts x the simplex grid (vertices and edges included) of 3 domains."""
  mixes = [h for h in itertools.product(np.linspace(0, 1, step + 1), repeat=3) if abs(sum(h) - 1) < 1e-9]
  rows = [dict(params=n, tokens=d, **dict(zip(DOMAINS, h))) for n in (1e7, 1e8, 1e9) for d in (1e9, 1e10, 1e11)
          for h in mixes]
  df = pd.DataFrame(rows)
  pred, _ = mixture.predict(form, np.array(x)[None], np.log(df.params.to_numpy()), np.log(df.tokens.to_numpy()),
                            df[DOMAINS].to_numpy())
  df["loss"] = pred[0]
  return df


@pytest.mark.parametrize("form, x", [("additive", X_ADDITIVE), ("joint", X_JOINT)])
def test_gradient_matches_central_differences(form, x):
  df = mixture_frame(form, x, step=2)
  obj = mixture.MixtureObjective(form, np.log(df.params.to_numpy()), np.log(df.tokens.to_numpy()),
                                 df[DOMAINS].to_numpy(), np.log(df.loss.to_numpy()) + 0.01, 1e-3)
  pt = np.array(x)[None] + 0.05
  _, g = obj(pt)
  numeric = [(obj(pt + e)[0] - obj(pt - e)[0])[0] / 2e-6 for e in 1e-6 * np.eye(len(x))[:, None, :]]
  np.testing.assert_allclose(g[0], numeric, rtol=1e-5, atol=1e-9 * np.abs(g).max())


def test_additive_law_is_recovered_and_its_optimal_mix_ignores_scale():
  law = mixture.fit_mixture_law(from_frame(mixture_frame("additive", X_ADDITIVE)), "additive", n_starts=16)
  truth = {"E": 1.7, "A": 400.0, "alpha": 0.34, "B": 2000.0, "beta": 0.36, "C_text": 2.0, "C_image": 1.0,
           "C_audio": 0.5, "gamma_text": 0.5, "gamma_image": 0.3, "gamma_audio": 0.8}
  for key, value in truth.items():
    assert law.params[key] == pytest.approx(value, rel=1e-4), key
  small, large = mixture.optimal_mixture(law, 1e8, 1e10), mixture.optimal_mixture(law, 1e10, 1e12)
  for d in law.domains:
    assert small["mixture"][d] == pytest.approx(large["mixture"][d], abs=1e-5)
  assert law.estimator["joint_form_provenance"].startswith("METHOD")


def test_joint_data_need_the_joint_law_whose_optimum_drifts():
  table = from_frame(mixture_frame("joint", X_JOINT))
  joint = mixture.fit_mixture_law(table, "joint", n_starts=16)
  additive = mixture.fit_mixture_law(table, "additive", n_starts=16)
  assert joint.objective < additive.objective / 100
  assert joint.diagnostics["residuals"]["max_abs"] < 1e-3
  assert joint.params["alpha"] == pytest.approx(0.34, rel=1e-2)
  scale_law = {"E": 1.7, "A": 400.0, "B": 2000.0, "alpha": 0.34, "beta": 0.36}
  drift = mixture.mixture_drift(joint, scale_law, [1e18, 1e24])
  assert abs(drift[0]["mixture"]["text"] - drift[1]["mixture"]["text"]) > 0.01
  assert joint.estimator["joint_form_provenance"] == "lab convention"


def test_bad_mixtures_are_user_errors():
  df = mixture_frame("additive", X_ADDITIVE, step=2)
  with pytest.raises(UserError, match="sum to 1"):
    mixture.fit_mixture_law(from_frame(df.assign(mix_text=df.mix_text + 0.1)))
  with pytest.raises(UserError, match="mix_"):
    mixture.fit_mixture_law(from_frame(df.drop(columns=["mix_image", "mix_audio"])))
  with pytest.raises(UserError, match="form"):
    mixture.fit_mixture_law(from_frame(df), "quadratic")
