"""The coordinate check: flat activation RMS across widths 64→1024 under CompleteP, drifting under SP."""
import numpy as np
import pytest

from mdm_jax import coord_check


@pytest.mark.slow   # a 1024-wide model, 3 seeds: ~1 min CPU
def test_completep_is_flat_in_width_and_sp_drifts(tmp_path):
  # The two ends of 64→1024 (labs/transfer/figures/coord_check.png has every width); also checks the probe vs
  # model.apply. RMS is the mean over 3 init seeds: one seed moves a small-width layer's RMS by up to ~2×.
  sp, completep = coord_check.check((64, 1024), seeds=(0, 1, 2), steps=3, batch=2)
  assert (sp["parametrization"], completep["parametrization"]) == ("sp", "completep")
  np.testing.assert_allclose(np.mean(completep["by_seed"]["act_rms"], axis=0), completep["act_rms"], rtol=1e-12)
  assert len({round(x[0][-1][0], 6) for x in completep["by_seed"]["act_rms"]}) == 3   # the seeds differ
  cp_spread, sp_spread = coord_check.spread(completep), coord_check.spread(sp)
  print("activation RMS max/min across widths", {"completep": cp_spread, "sp": sp_spread})
  assert max(cp_spread.values()) < 2.0
  assert max(coord_check.spread(completep, "update_rms").values()) < 2.0
  assert max(sp_spread.values()) > 2.0 * max(cp_spread.values())
  # SP's hidden residual stream grows with width (fixed init std, fixed LR): a drift, not noise.
  block_RMS_W = np.asarray(sp["act_rms"])[:, -1, sp["layers"].index("block0")]
  assert np.all(np.diff(block_RMS_W) > 0)
  for res in (sp, completep):
    assert np.all(np.isfinite(res["train_loss"]))
  paths = coord_check.plot([sp, completep], tmp_path / "coord_check")
  assert all(p.stat().st_size > 1000 for p in paths) and {p.suffix for p in paths} == {".png", ".pdf"}
