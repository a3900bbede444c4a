"""Mixture laws over domain (modality) weights h, fitted like Approach 3 (METHOD.md §5.6).

    additive:  L = E + A/N^α + B/D^β + 1/Σ_j C_j h_j^{γ_j}
    joint:     L = E + (Σ_j A_j h_j)/N^α + (Σ_j B_j h_j)/D^β + 1/Σ_j C_j h_j^{γ_j}

The additive form (Shukor et al., arXiv 2507.09404, as recalled in METHOD — unverified) has ∂²L/∂N∂h = ∂²L/∂D∂h = 0,
so its optimal mix does not depend on scale. The joint form here is a **lab convention** (the paper's exact joint
parameterisation is NOT FOUND in our sources): it lets the scale terms' coefficients depend on h, nests the additive
law (all A_j equal, all B_j equal), and makes the optimal mix drift with N and D. Fit both and report the drift.

Estimator: Huber(δ) on log L − log L̂, summed; positive coefficients in log space; batched L-BFGS from seeded random
starts (the parameter count grows with the number of domains, so a product grid would explode).
"""
import dataclasses

import numpy as np
from scipy import optimize

from analysis import diagnostics as diag
from analysis import lbfgs
from analysis import table as table_lib
from mdm_jax.errors import UserError

FORMS = ("additive", "joint")
# Uniform ranges of the random starts (log-space coefficients, exponents).
START_RANGES = {"e": (-1.0, 1.0), "a": (0.0, 25.0), "b": (0.0, 25.0), "alpha": (0.0, 2.0), "beta": (0.0, 2.0),
                "c": (-3.0, 3.0), "gamma": (0.0, 2.0)}
EXP_BOUNDS = (0.0, 5.0)
MEMORY = 30


@dataclasses.dataclass
class MixtureLaw:
  form: str
  domains: list
  params: dict            # E, alpha, beta, A or A_j, B or B_j, C_j, gamma_j (natural units, unrounded)
  objective: float
  estimator: dict
  diagnostics: dict
  input: dict

  def predict(self, params_n, tokens_n, h_nxJ):
    log_n, log_d = np.log(np.atleast_1d(params_n)), np.log(np.atleast_1d(tokens_n))
    return predict(self.form, self._vector(), log_n, log_d, np.atleast_2d(h_nxJ))[0][0]

  def _vector(self):
    return np.asarray(self.diagnostics["x"], np.float64)


def layout(form: str, n_domains: int) -> list[str]:
  """Names of the optimisation variables (log coefficients, exponents) in order."""
  j = range(n_domains)
  scale = ["a", "alpha", "b", "beta"] if form == "additive" else \
      [f"a_{i}" for i in j] + ["alpha"] + [f"b_{i}" for i in j] + ["beta"]
  return ["e"] + scale + [f"c_{i}" for i in j] + [f"gamma_{i}" for i in j]


def predict(form, x_KxP, log_n, log_d, h_nxJ):
  """L̂ [K, n] and its gradient terms d L̂/dθ [K, n, P]."""
  x = np.atleast_2d(x_KxP)
  k, (n, J) = x.shape[0], h_nxJ.shape
  i = 1
  big_e = np.exp(x[:, 0])[:, None]
  if form == "additive":
    coef_a, alpha, coef_b, beta = (x[:, i + q] for q in range(4))
    a_h = np.exp(coef_a)[:, None] * np.ones((1, n))
    b_h = np.exp(coef_b)[:, None] * np.ones((1, n))
    i += 4
  else:
    a_j, alpha = np.exp(x[:, i:i + J]), x[:, i + J]
    b_j, beta = np.exp(x[:, i + J + 1:i + 2 * J + 1]), x[:, i + 2 * J + 1]
    a_h, b_h = a_j @ h_nxJ.T, b_j @ h_nxJ.T
    i += 2 * J + 2
  c_j, gamma_j = np.exp(x[:, i:i + J]), x[:, i + J:i + 2 * J]
  pn, pd = np.exp(-alpha[:, None] * log_n), np.exp(-beta[:, None] * log_d)
  t_n, t_d = a_h * pn, b_h * pd
  present = h_nxJ > 0
  log_h = np.log(np.where(present, h_nxJ, 1.0))          # 0 where h_j = 0; masked below
  hg = np.exp(gamma_j[:, None, :] * log_h[None]) * present[None]   # [K, n, J] h_j^γ_j, 0 where h_j = 0
  terms = c_j[:, None, :] * hg                           # C_j h_j^γ_j
  s = terms.sum(-1)
  t_m = 1.0 / s
  pred = big_e + t_n + t_d + t_m
  grads = [big_e * np.ones((1, n))]
  if form == "additive":
    grads += [t_n, -log_n * t_n, t_d, -log_d * t_d]
  else:
    grads += [a_j[:, None, :] * h_nxJ[None] * pn[..., None]] + [(-log_n * t_n)[..., None]]
    grads += [b_j[:, None, :] * h_nxJ[None] * pd[..., None]] + [(-log_d * t_d)[..., None]]
  dm = -terms / (s * s)[..., None]
  grads += [dm, dm * log_h[None]]
  grad = np.concatenate([g if g.ndim == 3 else g[..., None] for g in grads], axis=-1)
  return pred, grad


class MixtureObjective:
  def __init__(self, form, log_n, log_d, h_nxJ, log_loss, delta):
    self.form, self.log_n, self.log_d, self.h, self.log_loss, self.delta = form, log_n, log_d, h_nxJ, log_loss, delta

  def residuals(self, x_KxP):
    return self.log_loss - np.log(predict(self.form, x_KxP, self.log_n, self.log_d, self.h)[0])

  def __call__(self, x_KxP, rows_K=None):
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
      pred, grad = predict(self.form, x_KxP, self.log_n, self.log_d, self.h)
      r = self.log_loss - np.log(pred)
      c = np.clip(r, -self.delta, self.delta)
      f = np.sum(c * (r - 0.5 * c), axis=1)
      g = -np.einsum("kn,knp->kp", c / pred, grad)
    return np.where(np.isfinite(f), f, np.inf), np.where(np.isfinite(g), g, 0.0)


def mixture_matrix(table: table_lib.RunTable) -> tuple[list[str], np.ndarray]:
  cols = table.mix_columns
  if len(cols) < 2:
    raise UserError("mix_", f"a mixture law needs >= 2 mixture columns (mix_<domain>), got {cols}",
                    "add the domain weights of each run")
  h = table.df[cols].to_numpy(np.float64)
  bad = np.abs(h.sum(1) - 1) > 1e-6
  if bad.any():
    raise UserError(cols[0], f"mixture weights must sum to 1 (row {int(np.flatnonzero(bad)[0])} sums to "
                    f"{h[bad][0].sum():.6g})", "normalise the mix_ columns")
  return [c[len(table_lib.MIX_PREFIX):] for c in cols], h


def fit_mixture_law(data, form: str = "additive", *, n_starts: int = 64, seed: int = 0, delta: float = 1e-3,
                    max_iter: int = 3000) -> MixtureLaw:
  from analysis.parametric import as_table, table_warnings
  table = as_table(data)
  if form not in FORMS:
    raise UserError("form", f"unknown mixture law {form!r}", f"use one of {', '.join(FORMS)}")
  domains, h = mixture_matrix(table)
  names = layout(form, len(domains))
  table_lib.require_rows(table, len(names) + 1, f"the {form} mixture law ({len(names)} parameters)")
  obj = MixtureObjective(form, np.log(table.column("params")), np.log(table.column("tokens")), h,
                         np.log(table.column("loss")), delta)
  rng = np.random.default_rng(seed)
  lo = np.array([START_RANGES[n.split("_")[0]][0] for n in names])
  hi = np.array([START_RANGES[n.split("_")[0]][1] for n in names])
  x0 = lo + (hi - lo) * rng.random((n_starts, len(names)))
  is_exp = np.array([n.split("_")[0] in ("alpha", "beta", "gamma") for n in names])
  lower, upper = np.where(is_exp, EXP_BOUNDS[0], -np.inf), np.where(is_exp, EXP_BOUNDS[1], np.inf)
  res = lbfgs.minimize(obj, x0, lower, upper, max_iter=max_iter, memory=MEMORY)
  best = int(np.argmin(res.f))
  x = res.x[best]
  flags = diag.parameter_flags(names, x, x0[best], lower, upper)
  status = lbfgs.STATUS_NAMES[int(res.status[best])]
  r = obj.residuals(x[None])[0]
  if res.status[best] == lbfgs.STALLED and np.max(np.abs(r)) < 1e-9:
    status = "converged_zero_residual"
  floor = len(table) * 0.5e-18
  n_basin = diag.basin_count(res.f, atol=floor)
  warnings = diag.warnings_for(flags, status, n_starts, n_basin) + table_warnings(table)
  params = {}
  for name, value in zip(names, x):
    base, _, idx = name.partition("_")
    label = {"e": "E", "a": "A", "b": "B", "c": "C"}.get(base, base)
    key = f"{label}_{domains[int(idx)]}" if idx else label
    params[key] = float(np.exp(value)) if base in ("e", "a", "b", "c") else float(value)
  estimator = {"form": form, "loss": "huber", "delta": delta, "reduction": "sum", "space": "log",
               "optimiser": "batched projected L-BFGS from seeded uniform starts", "n_starts": n_starts, "seed": seed,
               "joint_form_provenance": "lab convention" if form == "joint" else "METHOD §5.6 (unverified recall)"}
  diagnostics = {"status": status, "x": x.tolist(), "names": names, "best_basin_count": n_basin, **flags,
                 "residuals": diag.residual_summary(r, delta), "warnings": warnings}
  return MixtureLaw(form=form, domains=domains, params=params, objective=float(res.f[best]), estimator=estimator,
                    diagnostics=diagnostics, input=table.provenance())


def optimal_mixture(law: MixtureLaw, params: float, tokens: float) -> dict:
  """The h on the simplex that minimises the law's loss at (N, D), from every vertex and the centre."""
  J = len(law.domains)

  def loss(h):
    return float(law.predict(params, tokens, np.clip(h, 0, 1)[None])[0])
  starts = [np.full(J, 1.0 / J)] + [np.eye(J)[i] * 0.9 + 0.1 / J for i in range(J)]
  best = None
  for h0 in starts:
    res = optimize.minimize(loss, h0, method="SLSQP", bounds=[(0.0, 1.0)] * J,
                            constraints=[{"type": "eq", "fun": lambda h: np.sum(h) - 1.0}],
                            options={"ftol": 1e-14, "maxiter": 500})
    if best is None or res.fun < best.fun:
      best = res
  h = np.clip(best.x, 0, 1)
  return {"params": params, "tokens": tokens, "loss": float(best.fun),
          "mixture": {d: float(v) for d, v in zip(law.domains, h / h.sum())}}


def mixture_drift(law: MixtureLaw, scale_law: dict, flops) -> list[dict]:
  """Optimal mix at the compute-optimal (N*, D*) of `scale_law` (E, A, B, alpha, beta) for each C (§5.6 convention)."""
  from analysis.allocation import allocate
  out = []
  for c in np.atleast_1d(flops):
    alloc = allocate(scale_law, float(c))
    out.append({"flops": float(c), **optimal_mixture(law, float(alloc["params"]), float(alloc["tokens"]))})
  return out
