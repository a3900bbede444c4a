"""Compute-optimal allocation for L(N, D) = E + A/N^α + B/D^β under C = 6·N·D, in closed form (METHOD.md §5.1).

    N*(C) = G·(C/6)^a,  D*(C) = G^{−1}·(C/6)^b,  a = β/(α+β),  b = α/(α+β),  G = (αA/(βB))^{1/(α+β)}
    L*(C) = E + A·N*^{−α} + B·D*^{−β}

Inputs are the unrounded parameters (§5.9 pitfall 2: two-decimal exponents move a by ~0.01 and long extrapolations
by tens of percent); `rounded_parameters` flags inputs that look rounded. All functions broadcast over C.
"""
import math

import numpy as np
from scipy import optimize

from mdm_jax.errors import UserError

KEYS = ("E", "A", "B", "alpha", "beta")


def _check(params: dict) -> tuple[float, ...]:
  for key in KEYS:
    if key not in params:
      raise UserError(key, "missing from the law's parameters", f"give all of {', '.join(KEYS)}")
  E, A, B, alpha, beta = (float(params[k]) for k in KEYS)
  if not (A > 0 and B > 0 and alpha > 0 and beta > 0 and E >= 0):
    raise UserError("params", f"allocation needs A, B, alpha, beta > 0 and E >= 0, got {params}",
                    "a fit with an exponent at 0 has no interior optimum")
  return E, A, B, alpha, beta


def exponents(params: dict) -> dict:
  """a (share of N*), b (share of D*) and G, from unrounded values."""
  _, A, B, alpha, beta = _check(params)
  return {"a": beta / (alpha + beta), "b": alpha / (alpha + beta),
          "G": (alpha * A / (beta * B)) ** (1.0 / (alpha + beta))}


def allocate(params: dict, flops) -> dict:
  """N*, D*, D*/N* and L* at compute C (scalar or array), plus the exponents used."""
  E, A, B, alpha, beta = _check(params)
  ex = exponents(params)
  c6 = np.asarray(flops, np.float64) / 6.0
  n_opt = ex["G"] * c6 ** ex["a"]
  d_opt = c6 ** ex["b"] / ex["G"]
  loss = E + A * n_opt ** -alpha + B * d_opt ** -beta
  return {"flops": flops, "params": n_opt, "tokens": d_opt, "tokens_per_param": d_opt / n_opt, "loss": loss, **ex}


def flops_for_loss(params: dict, target_loss: float) -> float:
  """The compute whose optimal loss equals target_loss (L*(C) is monotone in C; solved in log C)."""
  E = _check(params)[0]
  if not target_loss > E:
    raise UserError("target_loss", f"{target_loss} is not above the irreducible loss E = {E:.6g}",
                    "no compute reaches it")

  def gap(log_c):
    return math.log(float(allocate(params, math.exp(log_c))["loss"]) - E) - math.log(target_loss - E)

  lo, hi = math.log(1.0), math.log(1e40)
  if gap(lo) < 0:
    raise UserError("target_loss", f"{target_loss} is already reached below 1 FLOP", "check the law's parameters")
  if gap(hi) > 0:
    raise UserError("target_loss", f"{target_loss} needs more than 1e40 FLOPs", "check the law's parameters")
  return math.exp(optimize.brentq(gap, lo, hi, xtol=1e-14, rtol=1e-15))


def rounded_parameters(params: dict, significant: int = 3) -> list[str]:
  """Names of parameters with at most `significant` significant digits: likely copied rounded from a paper."""
  out = []
  for key in KEYS:
    v = float(params.get(key, float("nan")))
    if math.isfinite(v) and v != 0 and float(f"{v:.{significant}g}") == v:
      out.append(key)
  return out
