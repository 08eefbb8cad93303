"""A BIDS dataset with fMRIPrep derivatives, indexed once with pybids: subjects, sessions and runs in order.

A run is the raw ``*_events.tsv`` and fMRIPrep's ``*_space-<space>_desc-preproc_bold.nii.gz``, brain
mask and ``*_desc-confounds_timeseries.tsv`` that share subject, session, acquisition and run. Its
``RepetitionTime`` is read from the raw BOLD's sidecar with BIDS inheritance (a root
``task-<label>_bold.json`` applies to every run), else from the preprocessed BOLD's sidecar.
Sessions are in scanning order: by ``acq_time`` of ``sub-<label>_sessions.tsv`` when it has one,
else by label (numbers in labels compared as numbers); runs by run index within a session.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

from ...errors import InvalidArgumentError, MissingFileError

__all__ = ["BidsRun", "BidsLayout", "DEFAULT_SPACE", "natural_key", "select_sessions"]

#: fMRIPrep space read when ``[source] space`` is not given.
DEFAULT_SPACE = "T1w"
#: Entities (besides subject and task) that tell a subject's runs apart.
_RUN_KEYS = ("session", "acquisition", "run")
_BOLD_EXTENSIONS = [".nii.gz", ".nii"]


def natural_key(label: str) -> tuple[Any, ...]:
    """Sort key of a label comparing its digit groups as numbers (``"2" < "10"``)."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", label) if part)


@dataclass(frozen=True)
class BidsRun:
    """One run of a subject: its files (None when absent) and its TR.

    Attributes
    ----------
    subject, task : str
    session : str or None
        The session label (None in a dataset without sessions).
    run : int or None
        The run index (None when the files carry no ``run-`` entity).
    acquisition : str or None
    events, bold, mask, confounds, raw_bold : Path or None
        Raw events; fMRIPrep's preprocessed BOLD, brain mask and confounds; the raw BOLD.
    tr : float or None
        RepetitionTime (s) from the sidecars (None when no sidecar gives one).
    """

    subject: str
    task: str
    session: str | None
    run: int | None
    acquisition: str | None
    events: Path | None
    bold: Path | None
    mask: Path | None
    confounds: Path | None
    raw_bold: Path | None
    tr: float | None

    @property
    def name(self) -> str:
        """``sub-01_ses-02_task-images_run-1``, for messages."""
        parts = [f"sub-{self.subject}", f"ses-{self.session}" if self.session else "", f"task-{self.task}",
                 f"acq-{self.acquisition}" if self.acquisition else "", f"run-{self.run}" if self.run else ""]
        return "_".join(part for part in parts if part)

    @property
    def any_file(self) -> Path:
        """The first file of the run that exists (events, preprocessed BOLD, raw BOLD)."""
        for path in (self.events, self.bold, self.raw_bold, self.mask, self.confounds):
            if path is not None:
                return path
        raise ValueError(f"run {self.name} has no file")


def select_sessions(available: Sequence[str | None], request: int | Sequence[int] | None,
                    where: str) -> list[str | None]:
    """The sessions of ``request`` among ``available`` (in scanning order).

    Parameters
    ----------
    available : sequence of str or None
        The subject's sessions in scanning order (``[None]`` for a dataset without sessions).
    request : int, sequence of int or None
        A count ``k`` (the first k sessions), 1-based positions, or None (every session).
    where : str
        The subject, for errors.

    Raises
    ------
    InvalidArgumentError
        Naming the sessions present when the request asks for more or for a position they lack.
    """
    labels = ", ".join(f"{i}: ses-{s}" for i, s in enumerate(available, 1) if s is not None) or "1 (no sessions)"
    if request is None:
        return list(available)
    if isinstance(request, int):
        if request > len(available):
            raise InvalidArgumentError(f"[prepare] sessions = {request}: {where} has {len(available)} session(s) "
                                       f"({labels}); ask for at most {len(available)}")
        return list(available[:request])
    bad = [s for s in request if not 1 <= int(s) <= len(available)]
    if bad:
        raise InvalidArgumentError(f"[prepare] sessions = {list(request)}: {where} has no session {bad[0]} (its "
                                   f"sessions in scanning order: {labels}); give positions 1..{len(available)}")
    return [available[int(s) - 1] for s in sorted(set(int(s) for s in request))]


def _session_order(root: Path, subject: str, labels: list[str]) -> list[str]:
    """``labels`` by ``acq_time`` of ``sub-<label>_sessions.tsv`` when it gives one for each, else by label."""
    by_label = sorted(labels, key=natural_key)
    table_path = root / f"sub-{subject}" / f"sub-{subject}_sessions.tsv"
    if not table_path.is_file():
        return by_label
    try:
        table = pd.read_csv(table_path, sep="\t", dtype=str, na_values="n/a", keep_default_na=False)
    except (ValueError, pd.errors.ParserError):
        return by_label
    if "acq_time" not in table.columns or "session_id" not in table.columns:
        return by_label
    times = dict(zip(table["session_id"].str.removeprefix("ses-"), pd.to_datetime(table["acq_time"],
                                                                                   errors="coerce")))
    if any(label not in times or pd.isna(times[label]) for label in labels):
        return by_label
    return sorted(by_label, key=lambda label: times[label])


class BidsLayout:
    """A BIDS root and its fMRIPrep derivatives, indexed once (pybids, no validation).

    Parameters
    ----------
    root : path-like
        The raw BIDS root (``dataset_description.json``, ``sub-*/``).
    derivatives : path-like or None
        fMRIPrep's output folder; None: ``<root>/derivatives/fmriprep``.
    task : str or None
        Task label; None: the dataset's only task.
    space : str or None
        fMRIPrep space label; None: :data:`DEFAULT_SPACE`.
    """

    def __init__(self, root: str | os.PathLike, derivatives: str | os.PathLike | None = None,
                 task: str | None = None, space: str | None = None) -> None:
        self.root = Path(root).expanduser()
        self.derivatives = Path(derivatives).expanduser() if derivatives else self.root / "derivatives" / "fmriprep"
        self._task = task
        self.space = space or DEFAULT_SPACE

    @cached_property
    def pybids(self) -> Any:
        """The pybids ``BIDSLayout`` of the root and the derivatives (built on first use)."""
        from bids import BIDSLayout

        for folder, what in ((self.root, "BIDS root"), (self.derivatives, "fMRIPrep derivatives folder")):
            if not (folder / "dataset_description.json").is_file():
                raise MissingFileError(f"{folder / 'dataset_description.json'} not found: the {what} needs one "
                                       "(BIDS); give the right folder (--root / --derivatives) or add the file")
        return BIDSLayout(self.root, derivatives=str(self.derivatives), validate=False)

    @cached_property
    def task(self) -> str:
        """The task label: the one given (it must exist), else the dataset's only task."""
        tasks = sorted(self.pybids.get_tasks())
        if self._task is not None:
            if self._task not in tasks:
                raise InvalidArgumentError(f"[source] task = {self._task!r} (--task): no such task in {self.root}; "
                                           f"tasks present: {', '.join(tasks) or 'none'}")
            return self._task
        if len(tasks) != 1:
            raise InvalidArgumentError(f"{self.root}: {len(tasks)} tasks ({', '.join(tasks) or 'none'}); name the "
                                       "one to read with [source] task (--task)")
        return str(tasks[0])

    def subjects(self) -> list[str]:
        """Subject labels of the raw root, naturally sorted."""
        return sorted(self.pybids.get_subjects(), key=natural_key)

    def sessions(self, subject: str) -> list[str | None]:
        """The subject's sessions holding the task, in scanning order (``[None]`` without sessions)."""
        labels = self.pybids.get_sessions(subject=subject, task=self.task)
        if not labels:
            return [None]
        return list(_session_order(self.root, subject, [str(label) for label in labels]))

    def _files(self, subject: str, scope: str, **filters: Any) -> dict[tuple, Any]:
        files = self.pybids.get(subject=subject, task=self.task, scope=scope, return_type="object", **filters)
        by_key: dict[tuple, Any] = {}
        for file in files:
            entities = file.get_entities()
            by_key.setdefault(tuple(entities.get(key) for key in _RUN_KEYS), file)
        return by_key

    def runs(self, subject: str, sessions: Sequence[str | None] | None = None) -> list[BidsRun]:
        """The subject's runs in ``sessions`` (default: all), sessions in scanning order then run index."""
        order = self.sessions(subject) if sessions is None else list(sessions)
        deriv = dict(scope="derivatives", space=self.space, datatype="func")
        found = {
            "events": self._files(subject, "raw", suffix="events", extension=".tsv"),
            "raw_bold": self._files(subject, "raw", suffix="bold", extension=_BOLD_EXTENSIONS),
            "bold": self._files(subject, desc="preproc", suffix="bold", extension=_BOLD_EXTENSIONS, **deriv),
            "mask": self._files(subject, desc="brain", suffix="mask", extension=_BOLD_EXTENSIONS, **deriv),
            "confounds": self._files(subject, "derivatives", desc="confounds", suffix="timeseries",
                                     extension=".tsv"),
        }
        keys = {key for role in ("events", "bold") for key in found[role] if key[0] in order}
        ordered = sorted(keys, key=lambda k: (order.index(k[0]), k[2] if k[2] is not None else 0, str(k[1])))
        return [self._run(subject, key, found) for key in ordered]

    def _run(self, subject: str, key: tuple, found: dict[str, dict[tuple, Any]]) -> BidsRun:
        paths = {role: Path(files[key].path) if key in files else None for role, files in found.items()}
        session, acquisition, run = key
        return BidsRun(subject=subject, task=self.task, session=session, run=None if run is None else int(run),
                       acquisition=acquisition, tr=self._tr(paths["raw_bold"], paths["bold"]), **paths)

    def _tr(self, *candidates: Path | None) -> float | None:
        """RepetitionTime of the first candidate whose (inherited) sidecar gives a positive one."""
        for path in candidates:
            if path is None:
                continue
            value = self.pybids.get_metadata(str(path)).get("RepetitionTime")
            try:
                tr = float(value)
            except (TypeError, ValueError):
                continue
            if tr > 0:
                return tr
        return None
