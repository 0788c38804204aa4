"""Energy-aware batch proposals: exact energies, a Gaussian-process guess of accuracy, and
expected hypervolume improvement (EHVI).

A candidate's energy per inference comes from the energy model in microseconds, before any
training; only its accuracy needs a fine-tune. `propose` spends that asymmetry:

1. Draw `proposals` random parameter sets, plus as many one- or two-parameter mutations of the
   trained trials' staircase front, and score all their energies in one vectorised call.
   Over-budget ones (energy inf) and parameter sets already tried are dropped.
2. While fewer than `startup` trials are trained, take a stratified sample of the log-energy
   range, so the very first batch already spans the energy axis, its cheap end included.
3. Afterwards fit a Gaussian process of accuracy on normalised parameter features and the known
   log energy (Matern 5/2; one length-scale and a noise level chosen by marginal likelihood from a
   small grid, the signal variance profiled out), and pick greedily by EHVI in (log10 energy,
   accuracy), the space `pareto.hypervolume` measures. Energy is exact and accuracy ~ N(mu,
   sigma), so in 2-D the expectation is a closed-form sum: one expected improvement per step of
   the front's staircase.
4. After each pick, its predicted accuracy joins the front and the process as if observed
   ("kriging believer"): the rest of the batch spreads out instead of piling onto one spot.

Pure NumPy over plain data: parameter dicts, their dimensions (anything with `sample(rng, count)`
and `features(value)`, e.g. `space.Dimension`), and (energy, accuracy) numbers; the search loop
turns trials into these. Deterministic given the seed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np

__all__ = ["GaussianProcess", "expected_hv_improvement", "propose"]

# Energies (J) of a list of Optuna param dicts in one call, np.inf for any over a budget.
EnergyFn = Callable[[list[dict]], np.ndarray]

# Grids for the process's hyperparameters, on features scaled to [0, 1]: length-scales from
# "a tenth of an axis" to "smooth across the whole space"; noise variance as a fraction of the
# accuracy's variance (fine-tune seeds and analog noise draws scatter accuracy by ~1 %).
_LENGTH_SCALES = (0.15, 0.3, 0.6, 1.2, 2.4)
_NOISE_RATIOS = (1e-3, 1e-2, 1e-1)
_JITTER = 1e-8


# --- features: Optuna params -> points in [0, 1]^d ---


def _features(dims: Mapping, params: Sequence[dict]) -> np.ndarray:
    """Normalised feature rows [len(params), d] of Optuna param dicts."""
    rows = [[f for name, dim in dims.items() for f in dim.features(p[name])] for p in params]
    return np.asarray(rows, np.float64).reshape(len(params), -1)


# --- the surrogate: a Gaussian process of accuracy ---


def _matern52(a: np.ndarray, b: np.ndarray, length_scale: float) -> np.ndarray:
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    r = math.sqrt(5.0) * np.sqrt(np.maximum(sq, 0.0)) / length_scale
    return (1.0 + r + r * r / 3.0) * np.exp(-r)


class GaussianProcess:
    """Zero-mean GP on standardised targets; hyperparameters by marginal likelihood on a grid."""

    def __init__(self, x: np.ndarray, y: np.ndarray, length_scale=None, noise_ratio=None):
        self.x = np.asarray(x, np.float64)
        y = np.asarray(y, np.float64)
        self.y_mean, self.y_std = float(y.mean()), float(y.std()) or 1.0
        self.z = (y - self.y_mean) / self.y_std
        if length_scale is None or noise_ratio is None:
            grid = [(ls, nr) for ls in _LENGTH_SCALES for nr in _NOISE_RATIOS]
            length_scale, noise_ratio = max(grid, key=lambda h: self._log_likelihood(*h))
        self.length_scale, self.noise_ratio = length_scale, noise_ratio
        self._factor()

    def _gram(self, length_scale: float, noise_ratio: float) -> np.ndarray:
        k = _matern52(self.x, self.x, length_scale)
        return k + (noise_ratio + _JITTER) * np.eye(len(self.x))

    def _log_likelihood(self, length_scale: float, noise_ratio: float) -> float:
        """Log marginal likelihood with the signal variance at its maximum (profiled out)."""
        chol = np.linalg.cholesky(self._gram(length_scale, noise_ratio))
        alpha = np.linalg.solve(chol, self.z)
        n = len(self.z)
        return -0.5 * n * math.log(max(alpha @ alpha / n, 1e-12)) - np.log(np.diag(chol)).sum()

    def _factor(self):
        chol = np.linalg.cholesky(self._gram(self.length_scale, self.noise_ratio))
        self._chol_inv = np.linalg.inv(chol)  # once, so predictions are matrix products
        self._alpha = self._chol_inv.T @ (self._chol_inv @ self.z)
        self._signal = max(float(self.z @ self._alpha) / len(self.z), 1e-12)

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and standard deviation of the noise-free target at rows of x."""
        k = _matern52(np.asarray(x, np.float64), self.x, self.length_scale)
        mean = k @ self._alpha
        v = k @ self._chol_inv.T
        var = self._signal * np.maximum(1.0 - (v * v).sum(1), 0.0)
        return self.y_mean + self.y_std * mean, self.y_std * np.sqrt(var)

    def believe(self, x: np.ndarray, y: np.ndarray) -> GaussianProcess:
        """The same process with (x, y) added as observations, hyperparameters kept."""
        return GaussianProcess(
            np.vstack([self.x, x]),
            np.concatenate([self.y_mean + self.y_std * self.z, y]),
            self.length_scale,
            self.noise_ratio,
        )


# --- expected hypervolume improvement in (log10 energy, accuracy) ---


def _normal_cdf(z: np.ndarray) -> np.ndarray:
    """Phi(z) by Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7): numpy has no erf."""
    x = np.abs(z) / math.sqrt(2.0)
    t = 1.0 / (1.0 + 0.3275911 * x)
    poly = t * (
        0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429)))
    )
    erf = 1.0 - poly * np.exp(-x * x)
    return 0.5 * (1.0 + np.sign(z) * erf)


def _staircase(log_e: np.ndarray, acc: np.ndarray, ref_log_e: float, min_accuracy: float):
    """Indices of the front's non-dominated feasible points, by rising energy and accuracy."""
    keep = np.flatnonzero(np.isfinite(log_e) & (log_e < ref_log_e) & (acc >= min_accuracy))
    steps, best = [], -np.inf
    for i in keep[np.lexsort((-acc[keep], log_e[keep]))]:
        if acc[i] > best:
            steps.append(i)
            best = acc[i]
    return np.asarray(steps, int)


def expected_hv_improvement(
    log_e, mean, std, front_log_e, front_acc, ref_log_e: float, min_accuracy: float = 0.0
) -> np.ndarray:
    """E[hypervolume gained] by points of exact log10 energy and accuracy ~ N(mean, std).

    The front (a non-dominated staircase, reference accuracy 0) splits the energy axis into steps
    of accuracy level f; a point at energy x gains, on every step right of x, the strip between
    f and its accuracy y, and only if y >= min_accuracy (else it is infeasible). With
    g = max(f, min_accuracy): E[(y - f) 1{y >= g}] = E[(y - g)+] + (g - f) P(y >= g).
    """
    log_e, mean = np.asarray(log_e, np.float64), np.asarray(mean, np.float64)
    std = np.maximum(np.asarray(std, np.float64), 1e-9)
    left = np.concatenate([[-np.inf], front_log_e])
    right = np.concatenate([front_log_e, [ref_log_e]])
    level = np.concatenate([[0.0], front_acc])
    width = np.clip(
        np.minimum(right, ref_log_e)[None, :] - np.maximum(left[None, :], log_e[:, None]), 0.0, None
    )
    floor = np.maximum(level, min_accuracy)
    z = (mean[:, None] - floor[None, :]) / std[:, None]
    cdf = _normal_cdf(z)
    pdf = np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    gain = std[:, None] * (z * cdf + pdf) + (floor - level)[None, :] * cdf
    return (width * gain).sum(1)


# --- proposals ---


def _key(params: dict) -> tuple:
    return tuple(sorted((k, round(v, 9) if isinstance(v, float) else v) for k, v in params.items()))


def _sample(dims: Mapping, count: int, rng) -> list[dict]:
    """count uniform random Optuna param dicts."""
    columns = [(name, dim.sample(rng, count)) for name, dim in dims.items()]
    return [{name: col[i] for name, col in columns} for i in range(count)]


def _mutate(dims: Mapping, parents: list[dict], count: int, rng) -> list[dict]:
    """count copies of the parents (in turn), each with one or two parameters re-drawn."""
    names = list(dims)
    fresh = _sample(dims, count, rng)
    redraw = np.argsort(rng.random((count, len(dims))), axis=1)[:, :2]
    keep_second = rng.random(count) < 0.5
    out = []
    for i, new in enumerate(fresh):
        picked = redraw[i, : 1 + int(keep_second[i])]
        out.append({**parents[i % len(parents)], **{names[j]: new[names[j]] for j in picked}})
    return out


def _log10(energy_j) -> np.ndarray:
    """log10 of energies, -inf for zero (a fully pruned network costs nothing, does nothing)."""
    energy_j = np.asarray(energy_j, np.float64)
    return np.log10(np.where(energy_j > 0, energy_j, 1.0)) - np.where(energy_j > 0, 0.0, np.inf)


def propose(
    dims: Mapping,
    trained: Sequence[tuple[dict, float, float]],
    pending: Sequence[dict],
    tried: Iterable[dict],
    energy_fn: EnergyFn,
    n: int,
    rng,
    *,
    min_accuracy: float = 0.0,
    reference_energy_j: float | None = None,
    proposals: int = 512,
    startup: int = 8,
) -> list[dict]:
    """Up to n new Optuna param dicts, chosen by expected hypervolume improvement.

    Args:
        dims: Optuna parameter name -> its dimension (`sample`, `features`), in a fixed order.
        trained: (params, energy_j, accuracy) of every trained candidate; they fit the surrogate.
        pending: params of candidates asked but not yet scored; believed at their predicted
            accuracy.
        tried: params of every trial so far (any state); never proposed again.
        energy_fn: energies (J) of a list of params in one call, np.inf for any over a budget;
            those are never proposed.
        rng: a numpy Generator or seed.
        min_accuracy: the accuracy budget (a point below it adds no hypervolume).
        reference_energy_j: hypervolume reference energy; default the highest energy seen.

    Fewer than n come back only when the draws hold fewer distinct in-budget new candidates.
    """
    if n <= 0:
        return []
    rng = np.random.default_rng(rng)
    front_log_e = _log10([energy for _, energy, _ in trained])
    front_acc = np.asarray([acc for _, _, acc in trained], np.float64)

    # The pool: random draws, plus mutations of the staircase of all trained points once a model
    # guides the choice (infeasible ones too: the front grows at its cheap end); deduplicated,
    # never a params set already tried, scored in one energy call.
    pool = _sample(dims, proposals, rng)
    if len(trained) >= startup:
        parents = [trained[i][0] for i in _staircase(front_log_e, front_acc, np.inf, 0.0)]
        pool += _mutate(dims, parents, proposals, rng)
    seen = {_key(p) for p in tried}
    pool = [p for k, p in {_key(p): p for p in pool}.items() if k not in seen]
    known = [*pending, *(params for params, _, _ in trained)]
    log_e = _log10(np.nan_to_num(np.asarray(energy_fn(pool + known), np.float64), posinf=0.0))
    known_log_e = log_e[len(pool) :]
    usable = np.flatnonzero(np.isfinite(log_e[: len(pool)]))  # in budget, not empty
    pool, pool_log_e = [pool[i] for i in usable], log_e[usable]
    n = min(n, len(pool))
    if n == 0:
        return []
    if len(trained) < startup:  # space filling: a stratified sample of the log-energy range
        low, high = pool_log_e.min(), pool_log_e.max()
        targets = low + (np.arange(n) + rng.random(n)) * (high - low) / n
        chosen = []
        for target in targets:  # the nearest not yet chosen (pool order is random)
            distance = np.abs(pool_log_e - target)
            distance[chosen] = np.inf
            chosen.append(int(np.argmin(distance)))
        return [pool[i] for i in chosen]

    # Inputs: the params' features and the known log energy, scaled to [0, 1] over this draw.
    low, high = pool_log_e.min(), pool_log_e.max()

    def inputs(params, log_energy):
        scaled = (np.clip(log_energy, low, high) - low) / ((high - low) or 1.0)
        return np.hstack([_features(dims, params), scaled[:, None]])

    x_pool = inputs(pool, pool_log_e)
    x_known = inputs(known, known_log_e)
    gp = GaussianProcess(x_known[len(pending) :], front_acc)
    if pending:  # believe pending trials at their predicted accuracy
        pending_acc = gp.predict(x_known[: len(pending)])[0]
        gp = gp.believe(x_known[: len(pending)], pending_acc)
        front_log_e = np.r_[front_log_e, known_log_e[: len(pending)]]
        front_acc = np.r_[front_acc, pending_acc]
    if reference_energy_j is None:
        ref_log_e = max(high, front_log_e.max(initial=-np.inf))
    else:
        ref_log_e = math.log10(reference_energy_j)

    # Greedy batch. A believed pick only lowers the others' gains (the front rises, sigma
    # shrinks), so after the first round only the best few are re-scored.
    mean, std = gp.predict(x_pool)
    steps = _staircase(front_log_e, front_acc, ref_log_e, min_accuracy)
    gain = expected_hv_improvement(
        pool_log_e, mean, std, front_log_e[steps], front_acc[steps], ref_log_e, min_accuracy
    )
    shortlist = np.argsort(-gain, kind="stable")[: max(64, 8 * n)]
    chosen = []
    for _ in range(n):
        i = shortlist[int(np.argmax(gain[shortlist]))]
        chosen.append(i)
        gp = gp.believe(x_pool[i : i + 1], mean[i : i + 1])
        front_log_e, front_acc = np.r_[front_log_e, pool_log_e[i]], np.r_[front_acc, mean[i]]
        mean[shortlist], std[shortlist] = gp.predict(x_pool[shortlist])
        steps = _staircase(front_log_e, front_acc, ref_log_e, min_accuracy)
        gain[shortlist] = expected_hv_improvement(
            pool_log_e[shortlist],
            mean[shortlist],
            std[shortlist],
            front_log_e[steps],
            front_acc[steps],
            ref_log_e,
            min_accuracy,
        )
        gain[chosen] = -np.inf
    return [pool[i] for i in chosen]
