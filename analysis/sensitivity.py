"""Outlier/subset sensitivity (METHOD.md §5.9 pitfall 6): refit without an exclusion and report what moved.

Dropping the five highest-loss Chinchilla runs changes β substantially and B several-fold; a stored fit that used an
exclusion rule therefore also stores the fit without it.
"""
import math

from analysis import table as table_lib

KEYS = ("E", "A", "B", "alpha", "beta", "a", "b", "k_params", "k_tokens")


def summary(fit) -> dict:
  return {k: float(getattr(fit, k)) for k in KEYS if hasattr(fit, k)}


def exclusion_sensitivity(full: table_lib.RunTable, fit_fn, exclude_top_loss: int, **fit_kw) -> dict:
  """Fit with and without dropping the `exclude_top_loss` highest-loss rows; relative change of each quantity."""
  kept = table_lib.exclude_top_loss(full, exclude_top_loss)
  with_rule, without_rule = summary(fit_fn(kept, **fit_kw)), summary(fit_fn(full, **fit_kw))
  change = {k: (without_rule[k] / with_rule[k] - 1.0) if with_rule[k] not in (0.0,) and math.isfinite(with_rule[k])
            else None for k in with_rule}
  return {"rule": f"exclude_top_loss={exclude_top_loss}", "with_exclusion": with_rule,
          "without_exclusion": without_rule, "relative_change_without": change}
