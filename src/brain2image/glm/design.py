"""Design pieces of a single-trial GLM: settings, one regressor per trial, and the nuisance columns.

The regressors are nilearn's (:func:`nilearn.glm.first_level.make_first_level_design_matrix`): each
trial is its own condition convolved with the HRF, confounds enter as ``add_regs``, and the cosine
drift (``high_pass``) with the constant closes the design, exactly as ``FirstLevelModel`` builds it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from nilearn.glm.first_level import make_first_level_design_matrix

from ..errors import InvalidArgumentError

__all__ = ["GlmSettings", "TrialDesign", "trial_design", "METHODS", "HRFS"]

#: Single-trial estimators: least squares separate (one GLM per trial) or all (one GLM).
METHODS = ("lss", "lsa")
#: HRF models (nilearn's names).
HRFS = ("glover", "spm")
#: Warnings of nilearn's design builder that say nothing wrong here: impulse events (duration 0) are
#: legitimate, and a singular design is reported by our own rank checks as one clear error.
_QUIET = ("The following conditions contain events with null duration",
          "Matrix is singular at working precision")


@dataclass(frozen=True)
class GlmSettings:
    """How single-trial betas are estimated.

    Parameters
    ----------
    method : str
        ``"lss"`` (one GLM per trial: that trial, all other trials, nuisance) or ``"lsa"`` (one GLM, one
        regressor per trial).
    hrf : str
        ``"glover"`` or ``"spm"``.
    high_pass : float
        Cut-off (Hz) of the cosine drift regressors.
    percent_signal_change : bool
        Scale each voxel as nilearn's ``FirstLevelModel(signal_scaling=0)``: ``100 * (y / mean - 1)``.
    """

    method: str = "lss"
    hrf: str = "glover"
    high_pass: float = 0.01
    percent_signal_change: bool = True

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise InvalidArgumentError(f"glm method {self.method!r} is unknown: use one of {', '.join(METHODS)}")
        if self.hrf not in HRFS:
            raise InvalidArgumentError(f"hrf {self.hrf!r} is unknown: use one of {', '.join(HRFS)}")
        if not np.isfinite(self.high_pass) or self.high_pass <= 0:
            raise InvalidArgumentError(f"high_pass must be a positive frequency in Hz (e.g. 0.01), "
                                       f"got {self.high_pass!r}")


@dataclass(frozen=True)
class TrialDesign:
    """One run's design, split into the trial regressors and the nuisance columns.

    Parameters
    ----------
    trials : array of shape (n_volumes, n_trials)
        Each trial's HRF-convolved regressor, in the order of the onsets given.
    nuisance : array of shape (n_volumes, n_nuisance)
        Confounds, cosine drift and the constant (the constant is the last column).
    """

    trials: np.ndarray
    nuisance: np.ndarray

    def residual_trials(self) -> np.ndarray:
        """Trial regressors with the nuisance projected out, array of shape (n_volumes, n_trials)."""
        coef, *_ = np.linalg.lstsq(self.nuisance, self.trials, rcond=None)
        return self.trials - self.nuisance @ coef


def trial_design(frame_times: np.ndarray, onsets: np.ndarray, durations: np.ndarray,
                 confounds: np.ndarray | None, settings: GlmSettings) -> TrialDesign:
    """Build a run's design with nilearn, every trial its own condition.

    Parameters
    ----------
    frame_times : array of shape (n_volumes,)
        Acquisition time of each volume kept (s); need not be evenly spaced.
    onsets, durations : arrays of shape (n_trials,)
        Seconds, on the clock of ``frame_times``.
    confounds : array of shape (n_volumes, n_confounds) or None
    settings : GlmSettings

    Returns
    -------
    TrialDesign
    """
    names = [f"trial_{i:06d}" for i in range(len(onsets))]
    events = pd.DataFrame({"onset": onsets, "duration": durations, "trial_type": names})
    add_names = None if confounds is None else [f"confound_{k}" for k in range(confounds.shape[1])]
    with warnings.catch_warnings():
        for message in _QUIET:
            warnings.filterwarnings("ignore", message=message)
        design = make_first_level_design_matrix(
            np.asarray(frame_times, dtype=np.float64), events, hrf_model=settings.hrf, drift_model="cosine",
            high_pass=settings.high_pass, add_regs=confounds, add_reg_names=add_names)
    nuisance = [c for c in design.columns if c not in set(names)]
    return TrialDesign(trials=design[names].to_numpy(dtype=np.float64),
                       nuisance=design[nuisance].to_numpy(dtype=np.float64))
