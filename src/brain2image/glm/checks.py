"""Input checks of a single-trial GLM: every failure is one line naming the run and what to do."""

from __future__ import annotations

import numpy as np

from ..errors import DataFormatError

__all__ = ["check_run", "check_onsets", "ONSET_TOLERANCE", "MIN_ONSET"]

#: Two trials whose onsets differ by less than this (s) share one onset: their regressors are identical.
ONSET_TOLERANCE = 1e-3
#: nilearn ignores events starting more than this before the first volume (s).
MIN_ONSET = -24.0


def _vector(x: object, name: str, where: str) -> np.ndarray:
    """``x`` as a finite float64 vector, or one-line DataFormatError."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        raise DataFormatError(f"{where}: {name} must be a 1-D array, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise DataFormatError(f"{where}: {name} has NaN or infinite values (index {int(np.argmin(np.isfinite(arr)))});"
                              f" fix or drop those rows")
    return arr


def check_run(bold: np.ndarray, frame_times: object, onsets: object, durations: object,
              confounds: object | None, where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Check the shapes and values of one run; return frame times, onsets, durations and confounds as float64.

    Parameters
    ----------
    bold : array of shape (n_volumes, n_voxels)
    frame_times : array of shape (n_volumes,)
    onsets, durations : arrays of shape (n_trials,)
    confounds : array of shape (n_volumes, n_confounds) or None
    where : str
        Names the run in messages.

    Returns
    -------
    tuple of float64 arrays (frame_times, onsets, durations, confounds or None)
    """
    if bold.ndim != 2 or bold.shape[0] < 2 or bold.shape[1] < 1:
        raise DataFormatError(f"{where}: bold must be (n_volumes, n_voxels) with >= 2 volumes, got shape {bold.shape}")
    times = _vector(frame_times, "frame_times", where)
    if times.shape[0] != bold.shape[0]:
        raise DataFormatError(f"{where}: {times.shape[0]} frame times for {bold.shape[0]} volumes; give one time per "
                              f"volume kept (after dropping dummy volumes)")
    if np.any(np.diff(times) <= 0):
        raise DataFormatError(f"{where}: frame_times must increase strictly (volume {int(np.argmin(np.diff(times)))} "
                              f"is not before the next)")
    on, dur = _vector(onsets, "onsets", where), _vector(durations, "durations", where)
    if on.shape != dur.shape or on.size == 0:
        raise DataFormatError(f"{where}: {on.size} onsets but {dur.size} durations; give one of each per trial "
                              f"(at least one trial)")
    if np.any(dur < 0):
        raise DataFormatError(f"{where}: trial at onset {on[np.argmin(dur)]:g} s has a negative duration "
                              f"({dur.min():g} s); fix the events' duration column")
    return times, on, dur, _confounds(confounds, bold.shape[0], where)


def _confounds(confounds: object | None, n_volumes: int, where: str) -> np.ndarray | None:
    """Confounds as float64 (n_volumes, n_confounds), or None."""
    if confounds is None:
        return None
    arr = np.asarray(confounds, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[0] != n_volumes:
        raise DataFormatError(f"{where}: confounds have shape {arr.shape}, expected ({n_volumes}, n_confounds): one "
                              f"row per volume kept")
    if not np.all(np.isfinite(arr)):
        row, col = np.argwhere(~np.isfinite(arr))[0]
        raise DataFormatError(f"{where}: confounds have NaN at volume {row}, column {col}; fill them (e.g. 0 for the "
                              f"first row of derivatives) or drop the column")
    return arr if arr.shape[1] else None


def check_onsets(onsets: np.ndarray, frame_times: np.ndarray, where: str) -> None:
    """Refuse trials sharing one onset and trials outside the run (their betas cannot be estimated).

    Parameters
    ----------
    onsets : array of shape (n_trials,)
    frame_times : array of shape (n_volumes,)
    where : str
    """
    order = np.argsort(onsets, kind="stable")
    gaps = np.diff(onsets[order])
    if np.any(gaps < ONSET_TOLERANCE):
        k = int(np.argmax(gaps < ONSET_TOLERANCE))
        raise DataFormatError(f"{where}: trials {order[k]} and {order[k + 1]} share the onset {onsets[order[k]]:g} s, "
                              f"so their betas cannot be told apart; merge them into one trial or fix the onsets")
    outside = (onsets < frame_times[0] + MIN_ONSET) | (onsets >= frame_times[-1])
    if np.any(outside):
        k = int(np.argmax(outside))
        raise DataFormatError(f"{where}: trial {k} at onset {onsets[k]:g} s lies outside the volumes kept "
                              f"({frame_times[0]:g} to {frame_times[-1]:g} s); drop it from the events or check that "
                              f"onsets are in seconds from the first volume")
