"""Single-trial betas of one run, LSS or LSA, for every trial and voxel at once.

LSS (Mumford et al. 2012) fits, for each trial ``i``, the GLM ``[x_i, sum of the other trials, nuisance]``
and keeps the first beta. Every such design differs from the others in two columns only, so all of them
are solved together: the nuisance (confounds, cosine drift, constant) is projected out of the trial
regressors once (Frisch-Waugh-Lovell: the remaining coefficients are unchanged), and each trial's
2-column normal equations come from the Gram matrix of the residual regressors and one product
``R.T @ Y`` of shape (n_trials, n_voxels). LSA is one OLS with every trial regressor. The numbers are
those of nilearn's ``FirstLevelModel(signal_scaling=0, noise_model="ols")`` fitted per trial.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.linalg import cho_factor, cho_solve

from ..errors import DataFormatError
from .checks import check_onsets, check_run
from .design import GlmSettings, TrialDesign, trial_design

__all__ = ["single_trial_betas", "COLLINEARITY_TOLERANCE"]

#: A trial's design is refused when ``1 - R²`` of one of its columns on the others falls below this.
COLLINEARITY_TOLERANCE = 1e-8
#: Voxels are processed in chunks of about this many float64 elements (32 MB) of BOLD.
_CHUNK_ELEMENTS = 1 << 22

Solver = Callable[[np.ndarray], np.ndarray]


def single_trial_betas(bold: np.ndarray, frame_times: np.ndarray, onsets: np.ndarray, durations: np.ndarray,
                       confounds: np.ndarray | None = None, settings: GlmSettings = GlmSettings(), *,
                       where: str = "the run") -> np.ndarray:
    """Single-trial betas of one run (percent signal change with the default settings).

    Parameters
    ----------
    bold : array of shape (n_volumes, n_voxels)
        BOLD in scanner units (dummy volumes already dropped).
    frame_times : array of shape (n_volumes,)
        Acquisition time (s) of each volume kept; need not be evenly spaced.
    onsets, durations : arrays of shape (n_trials,)
        Trial onsets and durations (s), on the clock of ``frame_times``.
    confounds : array of shape (n_volumes, n_confounds), optional
        Nuisance regressors (no NaN).
    settings : GlmSettings
        Method (``lss``/``lsa``), HRF, high-pass cut-off and scaling.
    where : str
        Names the run in error messages.

    Returns
    -------
    array of shape (n_trials, n_voxels), float32
        Betas in the order of ``onsets``.
    """
    bold = np.asarray(bold)
    times, on, dur, conf = check_run(bold, frame_times, onsets, durations, confounds, where)
    check_onsets(on, times, where)
    design = trial_design(times, on, dur, conf, settings)
    residual = design.residual_trials()
    _check_trials_beyond_nuisance(design, residual, on, where)
    _check_distinct_trials(residual, on, where)
    if settings.method == "lss" and len(on) > 1:
        solve = _lss_solver(residual, on, where)
    else:
        solve = _lsa_solver(residual, on, where)
    return _betas_by_chunk(bold, residual, solve, settings.percent_signal_change, where)


def _betas_by_chunk(bold: np.ndarray, residual: np.ndarray, solve: Solver, scale: bool, where: str) -> np.ndarray:
    """Apply ``solve`` to ``residual.T @ Y`` chunk by chunk of voxels; (n_trials, n_voxels) float32."""
    n_volumes, n_voxels = bold.shape
    out = np.empty((residual.shape[1], n_voxels), dtype=np.float32)
    chunk = max(1, _CHUNK_ELEMENTS // n_volumes)
    column_sums = residual.sum(axis=0)[:, None]
    for start in range(0, n_voxels, chunk):
        y = np.asarray(bold[:, start:start + chunk], dtype=np.float64)
        finite = np.isfinite(y)
        if not finite.all():
            t, v = np.argwhere(~finite)[0]
            raise DataFormatError(f"{where}: bold has NaN or infinite values (voxel {start + v}, volume {t}); mask "
                                  f"the voxel out or fix the BOLD file")
        products = residual.T @ y
        if scale:  # nilearn's mean_scaling: 100 * (y / max(mean, 1) - 1), applied to the product
            products *= 100.0 / np.maximum(y.mean(axis=0), 1.0)
            products -= 100.0 * column_sums
        out[:, start:start + chunk] = solve(products)
    return out


def _check_trials_beyond_nuisance(design: TrialDesign, residual: np.ndarray, onsets: np.ndarray, where: str) -> None:
    """Refuse a trial whose regressor the drift and confounds explain entirely."""
    kept = (residual**2).sum(axis=0) / np.maximum((design.trials**2).sum(axis=0), np.finfo(float).tiny)
    if np.any(kept < COLLINEARITY_TOLERANCE):
        k = int(np.argmin(kept))
        raise DataFormatError(f"{where}: the regressor of trial {k} (onset {onsets[k]:g} s) is explained by the drift "
                              f"and confounds; drop the trial or the confound columns that mirror it")


def _check_distinct_trials(residual: np.ndarray, onsets: np.ndarray, where: str) -> None:
    """Refuse two trials whose regressors are the same (onsets closer than nilearn's time grid resolves)."""
    norm = 1.0 / np.sqrt((residual**2).sum(axis=0))
    correlation = np.abs((residual * norm).T @ (residual * norm))
    np.fill_diagonal(correlation, 0.0)
    if correlation.max() > 1.0 - COLLINEARITY_TOLERANCE:
        i, j = sorted(np.unravel_index(int(np.argmax(correlation)), correlation.shape))
        raise DataFormatError(f"{where}: trials {i} and {j} (onsets {onsets[i]:g} s and {onsets[j]:g} s) have the same "
                              f"regressor, so their betas cannot be told apart; merge them into one trial or fix the "
                              f"onsets")


def _lss_solver(residual: np.ndarray, onsets: np.ndarray, where: str) -> Solver:
    """Closed-form LSS: each trial's 2x2 normal equations [x_i, sum of others] from the Gram matrix."""
    gram = residual.T @ residual
    aa = np.diag(gram).copy()
    row_sums = gram.sum(axis=1)
    ab = row_sums - aa
    bb = gram.sum() - 2.0 * row_sums + aa
    det = aa * bb - ab**2
    bad = det <= COLLINEARITY_TOLERANCE * aa * bb
    if np.any(bad):
        k = int(np.argmax(bad))
        raise DataFormatError(f"{where}: trial {k} (onset {onsets[k]:g} s) is collinear with the other trials, so LSS "
                              f"cannot separate it; check the onsets or drop that trial")

    def solve(products: np.ndarray) -> np.ndarray:
        other = products.sum(axis=0, keepdims=True) - products
        return (bb[:, None] * products - ab[:, None] * other) / det[:, None]

    return solve


def _lsa_solver(residual: np.ndarray, onsets: np.ndarray, where: str) -> Solver:
    """One OLS with every trial: Cholesky of the Gram matrix of the residual trial regressors."""
    gram = residual.T @ residual
    norm = 1.0 / np.sqrt(np.diag(gram))
    values, vectors = np.linalg.eigh(gram * norm[:, None] * norm[None, :])
    if values[0] <= COLLINEARITY_TOLERANCE:
        k = int(np.argmax(np.abs(vectors[:, 0])))
        raise DataFormatError(f"{where}: the trial regressors are rank-deficient (trial {k}, onset {onsets[k]:g} s, is "
                              f"a combination of the others); use glm = \"lss\" or check the onsets")
    factor = cho_factor(gram)

    def solve(products: np.ndarray) -> np.ndarray:
        return cho_solve(factor, products)

    return solve
