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
   log energy (scikit-learn's `GaussianProcessRegressor`: Matern 5/2 with one length-scale per
   feature, signal and noise variances by maximum marginal likelihood, L-BFGS from fixed starting
   values; it replaced a hand-written grid search of one isotropic length-scale, which reaches
   the same hypervolume after 50 trials but is ahead of it after 25 and much faster per batch:
   see `experiments/benchmarks/compare_gp.py` and `experiments/results/compare_gp.json`), and pick
   greedily by EHVI in (log10 energy, accuracy), the space `pareto.hypervolume` measures. Energy
   is exact and accuracy ~ N(mu, sigma), so in 2-D the expectation is a closed-form sum: one
   expected improvement per step of the front's staircase.
4. After each pick, its predicted accuracy joins the front and the process as if observed
   ("kriging believer"): the rest of the batch spreads out instead of piling onto one spot.

NumPy (and scikit-learn's GP) over plain data: parameter dicts, their dimensions (anything with
`sample(rng, count)` and `features(value)`, e.g. `space.Dimension`), and (energy, accuracy)
numbers; the search loop turns trials into these. Deterministic given the seed.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from codesign.search.fronts import staircase

if TYPE_CHECKING:  # scikit-learn and scipy are imported on first use (about 2 s): a search
    from sklearn.gaussian_process import GaussianProcessRegressor  # that resumes starts faster
    from sklearn.gaussian_process.kernels import Kernel

__all__ = ["GaussianProcess", "expected_hv_improvement", "propose"]

# Energies (J) of a list of Optuna param dicts in one call, np.inf for any over a budget.
EnergyFn = Callable[[list[dict]], np.ndarray]

# The process's hyperparameters live on features scaled to [0, 1] and standardised accuracy:
# length-scales (one per feature) from "a hundredth of an axis" to "flat across the space"; the
# noise variance as a fraction of the accuracy's variance (fine-tune seeds and analog noise draws
# scatter accuracy by ~1 %), never below a jitter that keeps the Cholesky factor stable.
_LENGTH_SCALE_BOUNDS = (1e-2, 1e2)
_NOISE_BOUNDS = (1e-6, 1.0)
_JITTER = 1e-8
# Extra L-BFGS starts (drawn from a fixed seed, so the fit stays deterministic). On digits_mlp,
# seeds 0-4, 2 gave no better hypervolume than 0 (2.26 against 2.28 after 50 trials) at twice
# the time (125 against 52 ms per batch): compare_gp.py.
_RESTARTS = 0


@functools.cache
def _blas():
    """The process's matrices are tiny (one row per trial): one BLAS thread fits them ~10x faster
    than several threads contending for the cores (measured: 25 against 300 ms per fit, 2 cores)."""
    import scipy.optimize  # noqa: F401  (load the BLAS libraries the GP fit uses first,
    import sklearn.gaussian_process  # noqa: F401  so that the controller sees and limits them)
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


# --- features: Optuna params -> points in [0, 1]^d ---


def _features(dims: Mapping, params: Sequence[dict]) -> np.ndarray:
    """Normalised feature rows [len(params), d] of Optuna param dicts."""
    columns = [dim.feature_columns([p[name] for p in params]) for name, dim in dims.items()]
    return np.hstack(columns) if columns else np.zeros((len(params), 0))


# --- the surrogate: a Gaussian process of accuracy ---


class GaussianProcess:
    """scikit-learn's GP regressor: Matern 5/2 with one fitted length-scale per feature (ARD),
    signal and noise variances by marginal likelihood, on standardised targets."""

    def __init__(self, x: np.ndarray, y: np.ndarray, kernel: Kernel | None = None, noise=None):
        """Fits the hyperparameters, or keeps the given ones (`kernel`: the noise-free part)."""
        self.x, self.y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        with _blas().limit(limits=1, user_api="blas"):
            if kernel is None or noise is None:
                kernel, noise = _fit(self.x, self.y)
            self.kernel, self.noise = kernel, float(noise)  # signal * Matern; noise variance
            # Predictions use the noise-free kernel with the noise on the diagonal (alpha), so
            # `predict` gives the uncertainty of the noise-free target.
            self._gp = _regressor(kernel, self.noise + _JITTER, False).fit(self.x, self.y)

    @property
    def length_scales(self) -> np.ndarray:
        """The fitted length-scale of every feature (a large one: the feature barely matters)."""
        return np.atleast_1d(self.kernel.k2.length_scale)

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and standard deviation of the noise-free target at rows of x."""
        with _blas().limit(limits=1, user_api="blas"):
            return self._gp.predict(np.asarray(x, np.float64), return_std=True)

    def believe(self, x: np.ndarray, y: np.ndarray) -> GaussianProcess:
        """The same process with (x, y) added as observations, hyperparameters kept."""
        return GaussianProcess(
            np.vstack([self.x, x]), np.concatenate([self.y, y]), self.kernel, self.noise
        )


def _fit(x: np.ndarray, y: np.ndarray) -> tuple[Kernel, float]:
    """Signal * Matern 5/2 (ARD) kernel and noise variance maximising the marginal likelihood."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

    signal = ConstantKernel(1.0, (1e-2, 1e2))
    matern = Matern(np.ones(x.shape[1]), _LENGTH_SCALE_BOUNDS, nu=2.5)
    fitted = _regressor(signal * matern + WhiteKernel(1e-2, _NOISE_BOUNDS), _JITTER, True)
    with warnings.catch_warnings():  # a length-scale at its bound: an irrelevant feature
        warnings.simplefilter("ignore", ConvergenceWarning)
        fitted.fit(x, y)
    return fitted.kernel_.k1, fitted.kernel_.k2.noise_level


def _regressor(kernel: Kernel, alpha: float, fit: bool) -> GaussianProcessRegressor:
    """A GP regressor on standardised targets; with `fit`, hyperparameters by L-BFGS."""
    from sklearn.gaussian_process import GaussianProcessRegressor

    return GaussianProcessRegressor(
        kernel,
        alpha=alpha,
        optimizer="fmin_l_bfgs_b" if fit else None,
        n_restarts_optimizer=_RESTARTS if fit else 0,
        normalize_y=True,
        random_state=0,
    )


# --- expected hypervolume improvement in (log10 energy, accuracy) ---


def _staircase(log_e: np.ndarray, acc: np.ndarray, ref_log_e: float, min_accuracy: float):
    """Indices of the front's non-dominated feasible points, by rising energy and accuracy."""
    keep = np.flatnonzero(np.isfinite(log_e) & (log_e < ref_log_e) & (acc >= min_accuracy))
    return keep[staircase(np.c_[log_e[keep], -acc[keep]])]


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
    from scipy.special import ndtr

    cdf = ndtr(z)
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
