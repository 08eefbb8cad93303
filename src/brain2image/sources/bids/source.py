"""A lab's own BIDS dataset with fMRIPrep derivatives as a data source: :class:`BIDSSource` (kind ``bids``).

Registered as ``bids`` in the ``brain2image.sources`` entry-point group. Subjects are the root's
``sub-<label>`` folders; ``prepare`` estimates single-trial betas from the preprocessed BOLD
(:mod:`.prepare`); the stimuli are the root's ``stimuli/`` folder with ``captions.tsv``.
"""

from __future__ import annotations

import numbers
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from ...errors import InvalidArgumentError, MissingFileError
from ..base import SubjectWords, refuse_source_keys
from ..stimulus_folder import SIMULATED_BY, FolderStimuli, generated_by_simulate
from .check import BidsCheck
from .layout import BidsLayout, natural_key, select_sessions
from .survey import Survey, survey_subject

if TYPE_CHECKING:
    from ...config import PrepareConfig, SourceConfig

__all__ = ["BIDSSource", "SIMULATED_BY", "READS"]

#: The ``[source]`` keys a BIDS source reads (besides kind and root).
READS = ("derivatives", "task", "space", "roi", "glm", "hrf", "high_pass", "center_runs", "confounds",
         "stimulus_column",
         "split_column", "identity_column", "image_size")
#: ``[prepare]`` keys of NSD only, which must stay at their defaults.
_NSD_ONLY = ("rois", "beta_format", "space", "beta_version", "scale")
_EXPECTED_ROOT = "expected a BIDS root: the folder holding dataset_description.json, sub-*/ and stimuli/"


class BIDSSource:
    """A BIDS dataset (raw root + fMRIPrep derivatives) of an image experiment.

    Parameters
    ----------
    config : SourceConfig
        ``kind = "bids"``; ``root`` (the raw BIDS root) and the keys of :data:`READS`.
    """

    kind = "bids"
    dataset = "bids"
    subject_words = SubjectWords(one="a subject of the BIDS dataset (sub-01 or 01)",
                                 many="subjects of the BIDS dataset", example='["sub-01", "sub-02"]')

    def __init__(self, config: SourceConfig) -> None:
        refuse_source_keys(config, allowed=READS)
        self.config = config
        self.root = None if config.root is None else Path(config.root).expanduser()
        present = ", ".join(self.subjects())
        if present:  # a bad subject label's error then names the subjects there are
            self.subject_words = SubjectWords(one=f"{self.subject_words.one}; subjects present: {present}",
                                              many=f"{self.subject_words.many} ({present})",
                                              example=self.subject_words.example)

    @cached_property
    def layout(self) -> BidsLayout:
        """The dataset, indexed once (pybids) on first use."""
        self.require_root()
        assert self.root is not None
        return BidsLayout(self.root, self.config.derivatives, self.config.task, self.config.space)

    def subjects(self) -> list[str]:
        """The root's ``sub-<label>`` folders (``"sub-01"``...), naturally sorted (none without a root).

        These are the run's subject labels: a run folder names its files ``sub-01_...``.
        """
        if self.root is None or not self.root.is_dir():
            return []
        names = [p.name for p in self.root.glob("sub-*") if p.is_dir() and len(p.name) > 4]
        return sorted(names, key=natural_key)

    def subject_label(self, value: object) -> str | None:
        """``"sub-01"`` for ``"sub-01"`` or ``"01"`` (an int: only when the dataset has that very label).

        When the root is not there (a config checked before its data exists), any BIDS label is taken;
        the run then stops at :meth:`require_root`.
        """
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            text = str(int(value))
        elif isinstance(value, str):
            text = value.strip().removeprefix("sub-")
        else:
            return None
        if self.root is None or not self.root.is_dir():
            return f"sub-{text}" if text.isalnum() else None
        return f"sub-{text}" if f"sub-{text}" in self.subjects() else None

    def require_root(self) -> None:
        """The root must be a folder with ``dataset_description.json``; so must the derivatives folder.

        Raises
        ------
        MissingFileError
        """
        if self.root is None:
            raise MissingFileError(f"[source] root (--root): no BIDS root given; {_EXPECTED_ROOT}")
        if not self.root.is_dir():
            raise MissingFileError(f"[source] root = {str(self.root)!r}: folder not found; {_EXPECTED_ROOT}")
        derivatives = Path(self.config.derivatives) if self.config.derivatives else self.root / "derivatives/fmriprep"
        for folder, what in ((self.root, _EXPECTED_ROOT), (derivatives, "expected fMRIPrep's output folder "
                                                                        "(--derivatives)")):
            if not (folder / "dataset_description.json").is_file():
                raise MissingFileError(f"{folder}: no dataset_description.json; {what}")

    def require_subject(self, subject: str, settings: PrepareConfig) -> None:
        """The subject's ``sub-<label>`` folder must exist.

        Raises
        ------
        MissingFileError
            Naming the subjects present.
        """
        self.require_root()
        if f"sub-{subject.removeprefix('sub-')}" not in self.subjects():
            raise MissingFileError(f"subject {subject} is not in the BIDS dataset {self.root}: no sub-"
                                   f"{subject.removeprefix('sub-')}/ folder; subjects present: "
                                   f"{', '.join(self.subjects()) or 'none'}")

    def _survey(self, subject: str, settings: PrepareConfig, scan: bool) -> Survey:
        _refuse_nsd_keys(settings)
        label = subject.removeprefix("sub-")
        self.require_subject(label, settings)
        sessions = select_sessions(self.layout.sessions(label), settings.sessions, f"sub-{label}")
        return survey_subject(self.layout, self.stimuli(), label, sessions, self.config, scan=scan)

    def check(self, subject: str, settings: PrepareConfig, *, trials_per_session: int | None = None) -> BidsCheck:
        """Every run of ``subject``, run by run (reads each BOLD once, for NaN volumes)."""
        return BidsCheck.from_survey(self._survey(subject, settings, scan=True))

    def prepare(self, subject: str, settings: PrepareConfig, out: Path, *, progress: bool = True,
                trials_per_session: int | None = None) -> Path:
        """Estimate ``subject``'s single-trial betas and write its prepared file (:mod:`.prepare`); returns ``out``.

        ``trials_per_session`` does not apply (the events give the trials).
        """
        from .prepare import prepare_survey

        survey = self._survey(subject, settings, scan=False)
        return prepare_survey(self.layout, survey, self.config, self.stimuli(), Path(out),
                              zscore_sessions=settings.zscore_sessions, progress=progress)

    def stimuli(self) -> FolderStimuli:
        """``<root>/stimuli`` (images resized to ``image_size``; simulated when the dataset says so)."""
        self.require_root()
        assert self.root is not None
        return FolderStimuli(self.root / "stimuli", image_size=self.config.image_size,
                             simulated=generated_by_simulate(self.root), label="BIDS stimuli")


def _refuse_nsd_keys(settings: PrepareConfig) -> None:
    """A one-line error when an NSD-only ``[prepare]`` key is not at its default."""
    from ...config import PrepareConfig

    default = PrepareConfig()
    for key in _NSD_ONLY:
        if getattr(settings, key) != getattr(default, key):
            hint = ("name ROIs with [source] roi (--roi NAME=MASK or NAME=reliable:N)" if key == "rois"
                    else "the fMRIPrep space is [source] space (--space)" if key == "space" else "it applies to NSD")
            raise InvalidArgumentError(f"[prepare] {key} = {getattr(settings, key)!r}: an NSD-only key, not read by "
                                       f"[source] kind = 'bids'; remove it ({hint})")
