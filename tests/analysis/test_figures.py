"""Every figure function returns a Figure and writes non-empty PDF, SVG and PNG files."""
import numpy as np
import pytest
from matplotlib.figure import Figure

from analysis import figures, mixture, resampling
from analysis.isoflop import fit_isoflop
from analysis.parametric import fit_approach3
from analysis.table import from_frame
from tests.analysis.conftest import CHINCHILLA_TRUTH, synthetic_frame
from tests.analysis.test_isoflop import isoflop_frame
from tests.analysis.test_mixture import X_ADDITIVE, mixture_frame


@pytest.fixture(scope="module")
def parametric():
  table = from_frame(synthetic_frame(CHINCHILLA_TRUTH, noise=0.003, seed=2))
  x0 = np.array([[np.log(482.0), np.log(2085.0), np.log(1.8172), 0.3478, 0.3658]])
  fit = fit_approach3(table, starts=x0)
  return table, fit, resampling.bootstrap(fit, table, 60, seed=0)


def _check(fig, path, formats=("png",)):
  assert isinstance(fig, Figure)
  paths = figures.save(fig, path, formats)
  assert [p.suffix[1:] for p in paths] == list(formats)
  assert all(p.stat().st_size > 1000 for p in paths)


def test_parametric_figures(parametric, tmp_path):
  table, fit, boot = parametric
  _check(figures.frontier(fit, boot, table=table), tmp_path / "frontier", figures.FORMATS)  # vector + PNG
  _check(figures.loss_vs_compute(table, fit), tmp_path / "loss")
  _check(figures.residuals(fit, table), tmp_path / "resid")
  _check(figures.bootstrap_histograms(boot, fit), tmp_path / "hist")


def test_isoflop_figures(tmp_path):
  table = from_frame(isoflop_frame(shift=np.array([0, 0, 2.0, 0, 0, 0, 0]), noise=0.002))
  fit = fit_isoflop(table)
  boot = resampling.bootstrap(fit, table, 20, seed=0)
  _check(figures.isoflop_profiles(fit, table), tmp_path / "iso")
  _check(figures.frontier(fit, boot, table=table), tmp_path / "front")


def test_mixture_figure(tmp_path):
  table = from_frame(mixture_frame("additive", X_ADDITIVE, step=2))
  law = mixture.fit_mixture_law(table, "additive", n_starts=8)
  drift = mixture.mixture_drift(law, CHINCHILLA_TRUTH, [1e19, 1e21])
  _check(figures.mixture_plot(law, table, drift), tmp_path / "mix")


def test_palette_is_the_okabe_ito_set_and_style_is_scoped():
  import matplotlib as mpl
  assert figures.PALETTE[:3] == ("#0072B2", "#D55E00", "#009E73")
  before = mpl.rcParams["font.size"]
  with figures.paper_style():
    assert mpl.rcParams["font.size"] == figures.STYLE["font.size"]
  assert mpl.rcParams["font.size"] == before
