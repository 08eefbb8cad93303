"""``prepare`` of a BIDS subject: fMRIPrep runs -> single-trial betas (:mod:`brain2image.glm`) -> prepared file.

Every problem ``prepare --check`` lists is raised first, as one line naming the file, before any data is
read. Then run by run (memory: one run): the preprocessed BOLD at the voxels needed (the union of the
ROI masks, or the whole brain mask when a ``reliable:N`` ROI is asked), dummy volumes dropped, the
selected confounds, and the single-trial GLM; each run's betas go to ``<out>.betas-partial.h5``
(:mod:`.scratch`), so an interrupted ``prepare`` resumes where it stopped (a run that cannot be estimated,
NaN volumes say, removes it: fixing the run changes what the betas depend on). Finally the prepared file is
written by :func:`~brain2image.sources.single_trial.write_single_trial_prepared` and the scratch removed.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ...errors import Brain2ImageError, DataFormatError
from ...glm import GlmSettings, single_trial_betas
from ..single_trial import RoiSelection, TrialTable, write_single_trial_prepared
from ..stimulus_folder import FolderStimuli
from .confounds import read_confounds
from .layout import BidsLayout
from .scratch import ScratchBetas, scratch_path
from .survey import RunPlan, Survey, load_image, plans_identity

__all__ = ["glm_settings", "prepare_survey", "run_betas", "voxel_positions"]

logger = logging.getLogger(__name__)


def glm_settings(config: Any) -> GlmSettings:
    """The GLM settings of a ``SourceConfig`` (``glm``, ``hrf``, ``high_pass``; percent signal change)."""
    return GlmSettings(method=config.glm, hrf=config.hrf, high_pass=float(config.high_pass))


def voxel_positions(survey: Survey) -> tuple[np.ndarray, list[RoiSelection]]:
    """The voxels to estimate (``ijk``, array of shape (n_voxels, 3)) and each ROI's selection among them."""
    assert survey.brain is not None
    masks = [mask for mask in survey.rois.values() if mask is not None]
    union = survey.brain.copy() if any(m is None for m in survey.rois.values()) \
        else np.logical_or.reduce(masks)
    selections = []
    for spec in survey.specs:
        mask = survey.rois[spec.key]
        selections.append(RoiSelection(spec.key, reliable=spec.reliable) if mask is None else
                          RoiSelection(spec.key, columns=np.flatnonzero(mask[union]), atlas=str(spec.mask)))
    return np.argwhere(union), selections


def run_betas(plan: RunPlan, positions: np.ndarray, confounds: list[str], settings: GlmSettings,
              center: bool = False) -> np.ndarray:
    """Single-trial betas of one run at ``positions``, array of shape (n_trials, n_voxels) float32.

    With ``center``, each voxel's mean over the run's trials is subtracted (``[source] center_runs``).

    Raises
    ------
    DataFormatError
        NaN volumes at the voxels read (naming the file), or a GLM that cannot be fitted.
    """
    run = plan.run
    assert run.bold is not None and run.confounds is not None and run.tr is not None
    volume = np.asarray(load_image(run.bold).dataobj, dtype=np.float32)
    series = volume[positions[:, 0], positions[:, 1], positions[:, 2], :].T
    del volume
    bad = np.flatnonzero(~np.isfinite(series).all(axis=1))
    if len(bad):
        raise DataFormatError(f"{run.bold}: {len(bad)} volume(s) hold NaN inside the ROIs (first: volume {bad[0]}); "
                              "rerun fMRIPrep on this run or leave its session out (--sessions)")
    table = read_confounds(run.confounds, confounds, len(series))
    times = run.tr * np.arange(len(series), dtype=np.float64)
    keep = table.keep
    regressors = table.values[keep] if table.names else None
    betas = single_trial_betas(series[keep], times[keep], plan.events.onsets, plan.events.durations, regressors,
                               settings, where=str(run.bold))
    return betas - betas.mean(axis=0, dtype=np.float64).astype(np.float32) if center else betas


def _trial_table(survey: Survey, identity: np.ndarray | None = None) -> TrialTable:
    plans = survey.plans
    split = [plan.events.split for plan in plans]
    return TrialTable(
        image_id=np.concatenate([plan.events.image_ids for plan in plans]),
        session=np.concatenate([np.full(len(plan.events), plan.session, dtype=np.int64) for plan in plans]),
        run=np.concatenate([np.full(len(plan.events), plan.index, dtype=np.int64) for plan in plans]),
        split=None if any(s is None for s in split) else np.concatenate(split),  # type: ignore[arg-type]
        identity=identity)


def _record(survey: Survey, positions: np.ndarray, config: Any) -> str:
    """What the betas depend on: GLM settings, confounds, voxels and every run's files (size, mtime)."""
    files = [[str(p), p.stat().st_size, p.stat().st_mtime_ns] for plan in survey.plans
             for p in (plan.run.bold, plan.run.events, plan.run.confounds) if p is not None]
    return json.dumps({"glm": [config.glm, config.hrf, float(config.high_pass), bool(config.center_runs)],
                       "confounds": list(config.confounds),
                       "voxels": hashlib.sha256(np.ascontiguousarray(positions, dtype=np.int64).tobytes()).hexdigest(),
                       "files": files})


def _attrs(layout: BidsLayout, survey: Survey, config: Any, stimuli: FolderStimuli) -> dict[str, Any]:
    labels = [s for s in survey.sessions if s is not None]
    return {"subject": f"sub-{survey.subject}", "space": layout.space, "source": "bids",
            "volume_shape": np.asarray(survey.shape, dtype=np.int64), "affine": survey.affine,
            "task": layout.task, "glm": config.glm, "hrf": config.hrf, "high_pass": float(config.high_pass),
            "center_runs": bool(config.center_runs),
            "confounds": list(config.confounds) or ["none"], "session_labels": labels or ["none"],
            "bids_root": str(layout.root.resolve()), "derivatives": str(layout.derivatives.resolve()),
            "stimulus_column": config.stimulus_column, "split_column": config.split_column or "",
            "identity_column": config.identity_column or "",
            **stimuli.identity()}


def prepare_survey(layout: BidsLayout, survey: Survey, config: Any, stimuli: FolderStimuli, out: Path, *,
                   zscore_sessions: bool = False, progress: bool = True) -> Path:
    """Estimate every run's betas of a surveyed subject and write its prepared file.

    Parameters
    ----------
    layout : BidsLayout
    survey : Survey
        From :func:`~.survey.survey_subject` (``scan=False``); its first blocking finding is raised.
    config : SourceConfig
    stimuli : FolderStimuli
    out : Path
        The prepared file (atomic); ``<out>.betas-partial.h5`` holds the runs done meanwhile.
    zscore_sessions : bool
    progress : bool

    Returns
    -------
    Path
        ``out``.
    """
    blocking = [finding for finding in survey.findings if finding.blocks_prepare]
    if blocking:
        raise blocking[0].exception()
    trials = _trial_table(survey, plans_identity(survey.plans, config.identity_column, stimuli))
    positions, rois = voxel_positions(survey)
    settings = glm_settings(config)
    scratch = ScratchBetas(scratch_path(out), _record(survey, positions, config))
    logger.info("sub-%s: %d runs, %d voxels, %d runs already estimated", survey.subject, len(survey.plans),
                len(positions), len(scratch.done))
    try:
        for index, plan in enumerate(tqdm(survey.plans, desc=f"GLM sub-{survey.subject}", unit="run",
                                          disable=not progress)):
            if index not in scratch.done:
                scratch.append(index, run_betas(plan, positions, list(config.confounds), settings,
                                                center=config.center_runs))
    except Brain2ImageError:  # a bad run (NaN volumes): fixing it changes the record, so the runs done are void
        scratch.remove()
        raise

    def read_session(session: int) -> np.ndarray:
        return scratch.read([i for i, plan in enumerate(survey.plans) if plan.session == session])

    write_single_trial_prepared(out, trials=trials, read_session=read_session, positions=positions,
                                rois=rois, attrs=_attrs(layout, survey, config, stimuli),
                                zscore_sessions=zscore_sessions, progress=progress,
                                where=f"sub-{survey.subject} of {layout.root}", content_keys=stimuli.content_keys)
    scratch.remove()
    return out
