"""One pass over a subject's runs that both ``check`` and ``prepare`` make: what is there, what is wrong.

For each run (in scanning order): events without a preprocessed BOLD or the reverse, the events
(columns, stimuli known to ``stimuli/``, two trials at one onset), the TR, the brain mask (present,
on the BOLD's grid, every run on one grid), the confounds (present, columns asked for, one row per
volume) and, when asked (``check``), NaN volumes inside the brain mask. Then, per subject: a test set
(images shown twice or more, or the split column's ``test`` rows), one NSD id per image (with an identity
column), the ROI masks, and the captions.
Each problem is a :class:`Finding` naming its file and what to do; ``prepare`` raises the first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from ...errors import Brain2ImageError, DataFormatError, MissingFileError
from ..roi_masks import RoiSpec, load_mask_on_grid, parse_roi_specs
from ..single_trial import nsd_identity
from ..stimulus_folder import FolderStimuli
from .confounds import read_confounds
from .events import RunEvents, read_events
from .layout import BidsLayout, BidsRun

__all__ = ["Finding", "RunPlan", "Survey", "survey_subject", "load_image", "plans_identity", "MIN_TEST_IMAGES",
           "GRID_ATOL"]

#: A test set needs at least this many images.
MIN_TEST_IMAGES = 2
#: Affines that differ by less than this (mm) are one grid.
GRID_ATOL = 1e-4


@dataclass(frozen=True)
class Finding:
    """One problem: the file, what is wrong and what to do, and the error ``prepare`` raises for it.

    Attributes
    ----------
    run : str
        The run (``sub-01_ses-01_task-x_run-1``), or ``"subject"`` / ``"roi <key>"`` / ``"stimuli"``.
    path : Path
    problem : str
    error : type
        A :mod:`brain2image.errors` class.
    blocks_prepare : bool
        False for what ``prepare`` does not need (captions: the c target needs them).
    """

    run: str
    path: Path
    problem: str
    error: type[Brain2ImageError] = DataFormatError
    blocks_prepare: bool = True

    def line(self) -> str:
        """``<path>: <problem>``, one line (the problem alone when it names the path already)."""
        text = self.problem if str(self.path) in self.problem else f"{self.path}: {self.problem}"
        return " ".join(text.split())

    def exception(self) -> Brain2ImageError:
        """The one-line error ``prepare`` raises."""
        return self.error(self.line())


@dataclass
class RunPlan:
    """A run fit for the GLM: its files, its image trials, its BOLD's volumes, session and run position."""

    run: BidsRun
    events: RunEvents
    n_volumes: int
    session: int
    index: int


@dataclass
class Survey:
    """What :func:`survey_subject` found."""

    subject: str
    sessions: list[str | None]
    plans: list[RunPlan] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    rows: list[tuple[str, str, str]] = field(default_factory=list)
    shape: tuple[int, int, int] | None = None
    affine: np.ndarray | None = None
    brain: np.ndarray | None = None
    rois: dict[str, np.ndarray | None] = field(default_factory=dict)
    specs: list[RoiSpec] = field(default_factory=list)

    def add(self, finding: Finding) -> None:
        """Record a problem (and its row of the table)."""
        self.findings.append(finding)
        self.rows.append((finding.run, "problem", finding.line()))

    def ok_row(self, run: str, detail: str) -> None:
        """Record what was found fine."""
        self.rows.append((run, "ok", detail))


def _attempt(survey: Survey, run: str, path: Path, read: Callable[[], Any]) -> Any:
    """``read()``, or None after recording its one-line error as a finding."""
    try:
        return read()
    except Brain2ImageError as error:
        survey.add(Finding(run, path, str(error), type(error)))
    return None


def load_image(path: Path) -> Any:
    """``nibabel.load`` (a NIfTI image: ``shape``, ``affine``, ``dataobj``)."""
    return nib.load(path)


def _header(path: Path) -> tuple[tuple[int, ...], np.ndarray]:
    try:
        img = load_image(path)
    except Exception as error:  # nibabel raises many kinds for a file that is not an image
        raise DataFormatError(f"{path}: not a NIfTI image ({type(error).__name__}); rerun fMRIPrep or replace "
                              "the file") from None
    return tuple(int(n) for n in img.shape), np.asarray(img.affine, dtype=np.float64)


def _same_grid(a: tuple[Sequence[int], np.ndarray], b: tuple[Sequence[int], np.ndarray]) -> bool:
    return tuple(a[0][:3]) == tuple(b[0][:3]) and bool(np.allclose(a[1], b[1], atol=GRID_ATOL))


def _check_grid(survey: Survey, run: BidsRun, bold: tuple[tuple[int, ...], np.ndarray]) -> bool:
    """The BOLD is 4D, on its mask's grid and on the first run's grid; reads the mask into ``survey.brain``."""
    name, path = run.name, run.bold
    assert path is not None
    if len(bold[0]) != 4 or bold[0][3] < 2:
        survey.add(Finding(name, path, f"shape {bold[0]}; expected a 4D BOLD series (X, Y, Z, volumes)"))
        return False
    if run.mask is None:
        survey.add(Finding(name, path, f"no brain mask (*_space-{path.name.split('_space-')[1].split('_')[0]}"
                                       "_desc-brain_mask.nii.gz) beside it; rerun fMRIPrep or add the mask",
                           MissingFileError))
        return False
    mask = _attempt(survey, name, run.mask, lambda: _header(run.mask))  # type: ignore[arg-type]
    if mask is None:
        return False
    if not _same_grid(mask, bold):
        survey.add(Finding(name, run.mask, f"grid {mask[0][:3]} (affine differs: {not np.allclose(mask[1], bold[1])})"
                                           f" is not the BOLD's {bold[0][:3]} ({path.name}); use the mask fMRIPrep "
                                           "wrote for this run and space"))
        return False
    if survey.shape is None:
        survey.shape, survey.affine = (bold[0][0], bold[0][1], bold[0][2]), bold[1]
    elif not _same_grid((survey.shape, survey.affine), bold):  # type: ignore[arg-type]
        survey.add(Finding(name, path, f"grid {bold[0][:3]} differs from the first run's {survey.shape}; expected "
                                       "every run in one space on one grid (fMRIPrep's --output-spaces)"))
        return False
    in_mask = np.asarray(load_image(run.mask).dataobj) > 0
    survey.brain = in_mask if survey.brain is None else survey.brain & in_mask
    return True


def _check_events(survey: Survey, run: BidsRun, stimuli: FolderStimuli, config: Any) -> RunEvents | None:
    assert run.events is not None
    events = _attempt(survey, run.name, run.events, lambda: read_events(
        run.events, stimuli, config.stimulus_column, config.split_column,  # type: ignore[arg-type]
        config.identity_column))
    if events is not None and events.shared_onsets():
        survey.add(Finding(run.name, run.events, f"two trials or more share onset {events.shared_onsets()[0]:g} s; "
                                                 "a single-trial GLM cannot tell them apart: fix the onsets"))
        return None
    return events


def _nan_volumes(bold: Path, mask: np.ndarray) -> list[int]:
    data = np.asarray(load_image(bold).dataobj, dtype=np.float32)[mask]
    return np.flatnonzero(~np.isfinite(data).all(axis=0)).tolist()


def _check_run(survey: Survey, run: BidsRun, stimuli: FolderStimuli, config: Any,
               scan: bool) -> tuple[int, RunEvents] | None:
    """Every check of one run; its number of volumes and its trials when it is fit for the GLM."""
    if run.bold is None:
        survey.add(Finding(run.name, run.any_file, "events without a preprocessed BOLD run (no *_space-"
                                                   "<space>_desc-preproc_bold.nii.gz for it in the derivatives); "
                                                   "run fMRIPrep on it, or check --space / --derivatives",
                           MissingFileError))
        return None
    if run.events is None:
        survey.add(Finding(run.name, run.bold, f"BOLD run without events: no {run.name}_events.tsv in the raw "
                                               "root; add it (onset, duration, stimulus column)", MissingFileError))
        return None
    events = _check_events(survey, run, stimuli, config)
    if run.tr is None:
        survey.add(Finding(run.name, run.raw_bold or run.bold, "no RepetitionTime in its sidecars (nor in an "
                                                               f"inherited task-{run.task}_bold.json); add it "
                                                               "(seconds)"))
    bold = _attempt(survey, run.name, run.bold, lambda: _header(run.bold))  # type: ignore[arg-type]
    grid_ok = bold is not None and _check_grid(survey, run, bold)
    confounds_ok = _check_confounds(survey, run, config.confounds, bold[0][3] if grid_ok else None)
    if grid_ok and scan and survey.brain is not None:
        bad = _nan_volumes(run.bold, survey.brain)
        if bad:
            survey.add(Finding(run.name, run.bold, f"{len(bad)} volume(s) hold NaN inside the brain mask (first: "
                                                   f"volume {bad[0]}); rerun fMRIPrep on this run or leave its "
                                                   "session out (--sessions)"))
            return None
    if events is None or run.tr is None or not grid_ok or not confounds_ok:
        return None
    survey.ok_row(run.name, f"{len(events)} trials, {bold[0][3]} volumes, TR {run.tr:g} s")
    return int(bold[0][3]), events


def _check_confounds(survey: Survey, run: BidsRun, wanted: Sequence[str], n_volumes: int | None) -> bool:
    if run.confounds is None:
        survey.add(Finding(run.name, run.bold or run.any_file, f"no {run.name}_desc-confounds_timeseries.tsv "
                                                               "beside it; rerun fMRIPrep", MissingFileError))
        return False
    return _attempt(survey, run.name, run.confounds,
                    lambda: read_confounds(run.confounds, wanted, n_volumes)) is not None  # type: ignore[arg-type]


def _check_test_set(survey: Survey, split_column: str | None) -> None:
    if not survey.plans:
        return
    ids = np.concatenate([plan.events.image_ids for plan in survey.plans])
    if split_column is not None:
        split = np.concatenate([plan.events.split for plan in survey.plans])
        test, how = np.unique(ids[split == "test"]), f"rows marked 'test' in column {split_column!r}"
    else:
        unique, counts = np.unique(ids, return_counts=True)
        test, how = unique[counts >= 2], "images shown twice or more"
    events = survey.plans[0].run.events
    assert events is not None
    path = next((p for p in events.parents if p.name == f"sub-{survey.subject}"), events.parent)
    if len(test) < MIN_TEST_IMAGES or len(test) == len(np.unique(ids)):
        survey.add(Finding("subject", path, f"{len(test)} test images ({how}) among {len(np.unique(ids))} "
                                                   f"images of sub-{survey.subject}; a test set needs at least "
                                                   f"{MIN_TEST_IMAGES}, and training images: show some images "
                                                   "several times or mark a split column (--split-column)"))


def plans_identity(plans: Sequence[RunPlan], column: str | None, stimuli: FolderStimuli) -> np.ndarray | None:
    """Each trial's NSD id over the runs (:func:`~brain2image.sources.single_trial.nsd_identity`).

    Returns
    -------
    array of shape (n_trials,), int64, or None
        -1 where a row gives none; None without a column (or without runs).

    Raises
    ------
    DataFormatError
        A value that is not an id, an image with two ids or an id on two images (naming the events file).
    """
    if column is None or not plans:
        return None
    values = [value for plan in plans for value in (plan.events.identity or [""] * len(plan.events))]
    origins = [str(plan.run.events) for plan in plans for _ in range(len(plan.events))]
    return nsd_identity(np.concatenate([plan.events.image_ids for plan in plans]), values, origins, column,
                        name_of=lambda image: stimuli.names([image])[0])


def _check_identity(survey: Survey, column: str | None, stimuli: FolderStimuli) -> None:
    """A finding, on the events file at fault, unless every image has at most one NSD id (and every id one image)."""
    try:
        plans_identity(survey.plans, column, stimuli)
    except DataFormatError as error:
        path = next((plan.run.events for plan in survey.plans if plan.run.events is not None
                     and str(error).startswith(str(plan.run.events))), stimuli.folder)
        survey.add(Finding("subject", path, str(error)))


def survey_subject(layout: BidsLayout, stimuli: FolderStimuli, subject: str, sessions: Sequence[str | None],
                   config: Any, *, scan: bool) -> Survey:
    """Check every run of ``subject`` in ``sessions``, then the test set, the ROIs and the captions.

    Parameters
    ----------
    layout : BidsLayout
    stimuli : FolderStimuli
    subject : str
    sessions : sequence of str or None
        The sessions to read, in scanning order.
    config : SourceConfig
        ``stimulus_column``, ``split_column``, ``confounds``, ``roi``.
    scan : bool
        Also read every BOLD for NaN volumes (``check``; ``prepare`` finds them run by run).
    """
    survey = Survey(subject, list(sessions))
    every = layout.sessions(subject)
    runs = layout.runs(subject, sessions)
    if not runs:
        survey.add(Finding("subject", layout.root / f"sub-{subject}", f"no run of task {layout.task!r} (events or "
                                                                      "preprocessed BOLD)", MissingFileError))
    positions: dict[str | None, int] = {}
    for run in runs:
        fit = _check_run(survey, run, stimuli, config, scan)
        positions[run.session] = positions.get(run.session, 0) + 1
        if fit is not None:
            survey.plans.append(RunPlan(run, fit[1], fit[0], every.index(run.session) + 1, positions[run.session]))
    _check_test_set(survey, config.split_column)
    _check_identity(survey, config.identity_column, stimuli)
    _check_rois(survey, config.subject_rois(f"sub-{subject}"), layout)
    if not stimuli.has_captions():
        survey.add(Finding("stimuli", stimuli.captions_path, "not found: the c target needs a caption of every "
                                                             "image; add rows `stim_file<TAB>caption`",
                           MissingFileError, blocks_prepare=False))
    return survey


def _check_rois(survey: Survey, rois: dict[str, str], layout: BidsLayout) -> None:
    """Parse the ROIs; put each mask on the BOLD grid, within the brain mask (None: ``reliable:N``)."""
    where = "[source] roi (--roi)"
    specs = _attempt(survey, "roi", Path(where), lambda: parse_roi_specs(rois, where))  # the key is at fault
    if specs is None:
        return
    survey.specs = specs
    reference = next((plan.run.bold for plan in survey.plans if plan.run.bold is not None), None)
    for spec in specs:
        if spec.mask is None:
            survey.rois[spec.key] = None
            continue
        if reference is None or survey.brain is None:
            continue
        mask = _attempt(survey, f"roi {spec.key}", spec.mask, lambda: load_mask_on_grid(
            spec.mask, load_image(reference), f"{where} {spec.key}"))  # noqa: B023
        if mask is None:
            continue
        if not (mask & survey.brain).any():
            survey.add(Finding(f"roi {spec.key}", spec.mask, "no voxel inside the runs' brain masks; give a mask "
                                                             "in the BOLD's space (--space)"))
            continue
        survey.rois[spec.key] = mask & survey.brain
        survey.ok_row(f"roi {spec.key}", f"{int(survey.rois[spec.key].sum())} voxels in the brain mask")  # type: ignore[union-attr]
