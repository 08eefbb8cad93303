"""BOLD time series of one simulated run: evoked responses, drift, nuisance and noise.

A voxel's signal, in percent change from its baseline, is::

    sum_t beta[t] * hrf_t(time)            evoked: one HRF-convolved block per trial (nilearn's glover)
  + drift(time)                            slow cosines and a linear trend (periods >= the run's length / 2)
  + motion(time) @ loadings                the six motion parameters, which really enter the signal
  + physio(time) * physio_loading          a smooth global nuisance, also in the csf / white_matter means
  + AR(1) noise                            temporally correlated, per voxel

and the scanner value is ``baseline * (1 + percent / 100)``. The first ``n_dummy`` volumes carry a large
non-steady-state transient (flagged by the ``non_steady_state_outlier_XX`` confound columns).
The confounds are written the way fMRIPrep writes them (:func:`confounds_table`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from nilearn.glm.first_level import compute_regressor
from scipy import ndimage, signal

__all__ = ["MOTION", "RunTiming", "VoxelNoise", "confounds_table", "motion_parameters", "physio_signal", "run_bold",
           "trial_regressors"]

#: The six motion parameters, as fMRIPrep names them (mm, rad).
MOTION = ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")
#: Step sd of the motion random walks: translations (mm) and rotations (rad) per volume.
MOTION_STEP = (0.02, 0.0004)
#: Transient of the dummy volumes, in percent of the baseline (first, second, third, ... volume).
DUMMY_TRANSIENT = (60.0, 25.0, 10.0, 4.0, 1.5)
#: Head radius (mm) turning rotations into displacements in the framewise displacement (Power et al. 2012).
HEAD_RADIUS = 50.0


@dataclass(frozen=True)
class RunTiming:
    """The timing of one run.

    Attributes
    ----------
    n_volumes : int
        Volumes of the run, dummy volumes included.
    tr : float
        Repetition time, s.
    onsets, durations : ndarray of shape (n_trials,)
        Trial onsets and durations, s from the first volume.
    n_dummy : int
        Non-steady-state volumes at the start.
    """

    n_volumes: int
    tr: float
    onsets: np.ndarray
    durations: np.ndarray
    n_dummy: int

    @property
    def frame_times(self) -> np.ndarray:
        """Acquisition time of every volume, s, array of shape (n_volumes,)."""
        return np.arange(self.n_volumes) * self.tr


@dataclass(frozen=True)
class VoxelNoise:
    """Per-voxel nuisance parameters of the brain voxels (percent signal change).

    Attributes
    ----------
    noise_sd : ndarray of shape (n_voxels,)
        Marginal sd of the AR(1) noise.
    ar : float
        AR(1) coefficient between volumes.
    drift_sd : ndarray of shape (n_voxels,)
        sd of each drift term's amplitude.
    motion_loading : ndarray of shape (n_voxels, 6)
        Percent change per mm (translations) or per rad / HEAD_RADIUS (rotations).
    physio_loading : ndarray of shape (n_voxels,)
        Loading on the global nuisance signal.
    """

    noise_sd: np.ndarray
    ar: float
    drift_sd: np.ndarray
    motion_loading: np.ndarray
    physio_loading: np.ndarray


def trial_regressors(timing: RunTiming, hrf_model: str = "glover") -> np.ndarray:
    """One HRF-convolved block per trial (nilearn's ``compute_regressor``).

    Returns
    -------
    ndarray of shape (n_volumes, n_trials), float64
    """
    columns = [compute_regressor(np.array([[onset], [duration], [1.0]]), hrf_model, timing.frame_times)[0][:, 0]
               for onset, duration in zip(timing.onsets, timing.durations)]
    return np.stack(columns, axis=1) if columns else np.zeros((timing.n_volumes, 0))


def motion_parameters(n_volumes: int, rng: np.random.Generator) -> np.ndarray:
    """Six smooth random walks: translations (mm) then rotations (rad), array of shape (n_volumes, 6)."""
    steps = rng.standard_normal((n_volumes, 6)) * np.repeat(MOTION_STEP, 3)
    walk = np.cumsum(ndimage.gaussian_filter1d(steps, sigma=1.5, axis=0), axis=0)
    return walk - walk[0]


def _drift(n_volumes: int, drift_sd: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A linear trend and cosines of orders 1–2 per voxel, percent, array of shape (n_volumes, n_voxels)."""
    time = (np.arange(n_volumes) + 0.5) / n_volumes
    basis = np.stack([time - 0.5, np.cos(np.pi * time), np.cos(2 * np.pi * time)], axis=1)
    weights = rng.standard_normal((3, len(drift_sd))) * drift_sd
    return basis @ weights


def _ar1(n_volumes: int, noise: VoxelNoise, rng: np.random.Generator) -> np.ndarray:
    """AR(1) noise of marginal sd ``noise_sd``, array of shape (n_volumes, n_voxels), float32."""
    innovations = rng.standard_normal((n_volumes, len(noise.noise_sd)), dtype=np.float32)
    innovations[0] /= np.sqrt(1 - noise.ar**2)  # stationary from the first volume
    series = signal.lfilter([1.0], [1.0, -noise.ar], innovations, axis=0)
    return (series * (noise.noise_sd * np.sqrt(1 - noise.ar**2))).astype(np.float32)


def physio_signal(n_volumes: int, rng: np.random.Generator) -> np.ndarray:
    """A smooth global nuisance (unit sd), array of shape (n_volumes,)."""
    smooth = ndimage.gaussian_filter1d(rng.standard_normal(n_volumes + 20), sigma=2.0)[10:-10]
    return smooth / (smooth.std() + 1e-12)


def run_bold(baseline: np.ndarray, betas: np.ndarray, regressors: np.ndarray, motion: np.ndarray,
             physio: np.ndarray, noise: VoxelNoise, n_dummy: int, rng: np.random.Generator) -> np.ndarray:
    """The scanner values of one run's brain voxels.

    Parameters
    ----------
    baseline : ndarray of shape (n_voxels,)
        Mean scanner value of each voxel.
    betas : ndarray of shape (n_trials, n_voxels)
        True single-trial responses, percent signal change (units of the ``regressors``).
    regressors : ndarray of shape (n_volumes, n_trials)
        :func:`trial_regressors`.
    motion : ndarray of shape (n_volumes, 6)
        :func:`motion_parameters`.
    physio : ndarray of shape (n_volumes,)
        :func:`physio_signal`.
    noise : VoxelNoise
    n_dummy : int
        Non-steady-state volumes at the start (get :data:`DUMMY_TRANSIENT`).
    rng : numpy.random.Generator

    Returns
    -------
    ndarray of shape (n_volumes, n_voxels), float32
    """
    n_volumes = regressors.shape[0]
    scaled_motion = motion * np.array([1.0] * 3 + [HEAD_RADIUS] * 3)
    percent = (regressors @ betas).astype(np.float32)
    percent += _drift(n_volumes, noise.drift_sd, rng).astype(np.float32)
    percent += (scaled_motion @ noise.motion_loading.T + physio[:, None] * noise.physio_loading).astype(np.float32)
    percent += _ar1(n_volumes, noise, rng)
    transient = np.zeros(n_volumes, dtype=np.float32)
    k = min(n_dummy, n_volumes, len(DUMMY_TRANSIENT))
    transient[:k] = DUMMY_TRANSIENT[:k]
    percent += transient[:, None]
    return (baseline.astype(np.float32) * (1 + percent / 100)).astype(np.float32)


def confounds_table(motion: np.ndarray, physio: np.ndarray, n_dummy: int, rng: np.random.Generator) -> pd.DataFrame:
    """fMRIPrep-style confounds of one run.

    Columns: the six motion parameters and their ``_derivative1`` (``NaN`` in row 1), ``csf``,
    ``white_matter`` (mean signals carrying the global nuisance), ``framewise_displacement``
    (``NaN`` in row 1) and ``non_steady_state_outlier_00`` … one-hot for the dummy volumes.

    Returns
    -------
    pandas.DataFrame of n_volumes rows
    """
    n_volumes = len(motion)
    table = pd.DataFrame(motion, columns=list(MOTION))
    for name in MOTION:
        table[f"{name}_derivative1"] = table[name].diff()
    transient = np.zeros(n_volumes)
    k = min(n_dummy, n_volumes, len(DUMMY_TRANSIENT))
    transient[:k] = DUMMY_TRANSIENT[:k]
    for name, level, load in (("csf", 1400.0, 0.8), ("white_matter", 900.0, 0.3)):
        wobble = rng.standard_normal(n_volumes) * 0.1
        table[name] = level * (1 + (load * physio + wobble + transient) / 100)
    displacement = np.abs(np.diff(motion, axis=0)) * np.array([1.0] * 3 + [HEAD_RADIUS] * 3)
    table["framewise_displacement"] = np.concatenate([[np.nan], displacement.sum(1)])
    for d in range(n_dummy):
        table[f"non_steady_state_outlier_{d:02d}"] = (np.arange(n_volumes) == d).astype(np.int64)
    return table
