"""Precomputed betas opened for one subject: betas, trials, stimulus ids, the sessions asked for."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import DataFormatError, InvalidArgumentError, MissingFileError
from ..roi_masks import RoiSpec, parse_roi_specs
from ..single_trial import TrialTable, nsd_identity
from ..stimulus_folder import FolderStimuli, generated_by_simulate
from .betafile import BetaFile
from .readers import open_betas
from .trials import BetaTrials, read_trials

__all__ = ["BetasSettings", "open_stimuli", "select_sessions", "trial_table", "open_study", "Study"]

#: ``GeneratedBy`` name of the datasets ``brain2image simulate`` writes (marks a simulated study).


@dataclass(frozen=True)
class BetasSettings:
    """The ``[source]`` keys of ``kind = "betas"`` (paths as the lead resolved them)."""

    root: Path
    betas: Path
    trials: Path
    mask: Path | None
    rois: dict[str, str]
    stimulus_column: str
    split_column: str | None
    image_size: int
    task: str | None
    space: str | None
    identity_column: str | None = None

    @classmethod
    def of(cls, config: Any, subject: str | None = None) -> BetasSettings:
        """Read from a :class:`~brain2image.config.SourceConfig`; a missing root, betas or trials is an error.

        ``{subject}`` in the ROI mask paths becomes ``subject`` when given.
        """
        missing = [key for key in ("root", "betas", "trials") if not getattr(config, key, None)]
        if missing:
            raise InvalidArgumentError(f"[source] kind = \"betas\" needs {missing[0]} (--{missing[0]}): root = the "
                                       "folder holding stimuli/, betas = the betas file or GLMsingle folder, trials "
                                       "= the trials TSV or events folder")
        rois = config.subject_rois(subject) if subject is not None else dict(config.roi)
        mask = getattr(config, "mask", None)
        return cls(Path(config.root).expanduser(), Path(config.betas).expanduser(), Path(config.trials).expanduser(),
                   Path(mask).expanduser() if mask else None, dict(rois),
                   getattr(config, "stimulus_column", "stim_file") or "stim_file",
                   getattr(config, "split_column", None), int(getattr(config, "image_size", 425)),
                   getattr(config, "task", None), getattr(config, "space", None),
                   getattr(config, "identity_column", None))

    def roi_specs(self) -> list[RoiSpec]:
        """The ROIs (:func:`~brain2image.sources.roi_masks.parse_roi_specs`)."""
        return parse_roi_specs(self.rois, "[source] roi")


def open_stimuli(settings: BetasSettings) -> FolderStimuli:
    """``<root>/stimuli`` as a :class:`FolderStimuli`."""
    return FolderStimuli(settings.root / "stimuli", image_size=settings.image_size,
                         simulated=generated_by_simulate(settings.root), label="stimuli")


def select_sessions(trials: BetaTrials, sessions: int | list[int] | None, where: str) -> np.ndarray:
    """The trials (bool, (n_trials,)) of ``[prepare] sessions``: a count (the first k) or 1-based positions."""
    present = len(trials.session_labels)
    wanted = list(range(1, present + 1)) if sessions is None else (
        list(range(1, int(sessions) + 1)) if isinstance(sessions, int) else [int(s) for s in sessions])
    absent = [s for s in wanted if not 1 <= s <= present]
    if absent:
        raise InvalidArgumentError(f"{where}: [prepare] sessions asks for session {absent[0]} but the trials have "
                                   f"{present} session(s) ({', '.join(trials.session_labels)}); ask for 1..{present}")
    return np.isin(trials.session, wanted)


def trial_table(trials: BetaTrials, image_ids: np.ndarray, keep: np.ndarray, identity_column: str = "identity",
                stimuli: FolderStimuli | None = None) -> TrialTable:
    """The :class:`TrialTable` of the kept trials (sessions keep their positions).

    With ``trials.identity``, each trial's NSD id (:func:`~brain2image.sources.single_trial.nsd_identity`;
    ``identity_column`` and ``stimuli`` name the column and the images in its errors).
    """
    split = None if trials.split is None else trials.split[keep]
    identity = None
    if trials.identity is not None:
        rows = np.flatnonzero(keep)
        origins = trials.origins or [trials.source] * len(trials)
        identity = nsd_identity(image_ids[rows], [trials.identity[r] for r in rows], [origins[r] for r in rows],
                                identity_column, name_of=str if stimuli is None else lambda i: stimuli.names([i])[0])
    return TrialTable(image_id=image_ids[keep], session=trials.session[keep], run=trials.run[keep], split=split,
                      identity=identity)


@dataclass(frozen=True)
class Study:
    """One subject's betas, trials and image ids, checked against each other."""

    settings: BetasSettings
    betas: BetaFile
    trials: BetaTrials
    image_ids: np.ndarray
    stimuli: FolderStimuli

    def rows_of(self, session: int) -> np.ndarray:
        """The betas' rows (0-based, increasing) of session position ``session``."""
        return np.flatnonzero(self.trials.session == session)


def open_study(settings: BetasSettings, subject: str | None) -> Study:
    """Open the betas (headers), read the trials and map their stimuli to image ids.

    Raises
    ------
    MissingFileError, DataFormatError
        A file missing or malformed, the trial count not the betas', a stimulus not in ``stimuli/``.
    """
    if not (settings.root / "stimuli").is_dir():
        raise MissingFileError(f"root = {str(settings.root)!r}: no stimuli/ folder in it; expected the folder "
                               "holding stimuli/ (the images the trials name)")
    betas = open_betas(settings.betas)
    trials = read_trials(settings.trials, settings.stimulus_column, settings.split_column, subject=subject,
                         task=settings.task, identity_column=settings.identity_column)
    if len(trials) != betas.n_trials:
        raise DataFormatError(f"{trials.source}: {len(trials)} trials but {betas.path} holds {betas.n_trials}; "
                              "expected one trial row per beta, in the betas' order")
    stimuli = open_stimuli(settings)
    ids = stimuli.ids_of(trials.stim_files, f"{trials.source} column {settings.stimulus_column!r}")
    return Study(settings, betas, trials, ids, stimuli)
