"""Precomputed single-trial betas as a data source (``[source] kind = "betas"``): :class:`BetasSource`.

Readers for a 4D NIfTI, ``.npy`` / ``.h5`` arrays and GLMsingle output folders
(:mod:`.readers`, :mod:`.glmsingle`, without arbitrary unpickling: :mod:`.safe_pickle`), the trials
(:mod:`.trials`), the voxels and ROIs (:mod:`.voxels`), ``prepare --check`` (:mod:`.check`).
"""

from __future__ import annotations

from .betafile import BetaFile
from .readers import open_betas
from .source import BetasSource
from .trials import BetaTrials, read_trials

__all__ = ["BetaFile", "BetaTrials", "BetasSource", "open_betas", "read_trials"]
