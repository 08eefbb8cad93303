"""What a data source is: a study's subjects and brain data, and the images they saw.

:class:`DataSource` holds the subjects and their brain data, :class:`StimulusSource` the images
they saw with their captions.

Everything downstream of ``prepare`` reads a study only through these two: the prepared file
(:mod:`brain2image.formats.prepared`) holds the brain data, and features, evaluation and the report
read images and captions through the run's :class:`StimulusSource`. A source is chosen by the run
config's ``[source] kind`` from the registry of :mod:`brain2image.sources.registry`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from ..config import PrepareConfig, SourceConfig

__all__ = ["DataSource", "StimulusSource", "SourceCheck", "SubjectWords", "numeric_label", "refuse_source_keys"]


def numeric_label(label: str) -> int | str:
    """A subject label as the run config and the run's files hold it: an integer when it is one.

    ``"1"`` -> ``1`` (so an NSD run's ``run_config.json``, folder ``subj01`` and ``subject``
    attributes stay what they were); ``"01"`` and ``"sub-01"`` stay strings.
    """
    return int(label) if label.isdigit() and str(int(label)) == label else label


def refuse_source_keys(config: SourceConfig, allowed: Sequence[str]) -> None:
    """Raise a one-line error when ``config`` gives a ``[source]`` key its kind does not read.

    Parameters
    ----------
    config : SourceConfig
    allowed : sequence of str
        The keys the source reads besides ``kind`` and ``root``.

    Raises
    ------
    InvalidArgumentError
        Naming the first key given that is not allowed, and the keys the kind reads.
    """
    from ..errors import InvalidArgumentError

    extra = [key for key in config.given_keys() if key not in allowed]
    if extra:
        reads = ", ".join(["root", *allowed])
        raise InvalidArgumentError(f"[source] {extra[0]} = {getattr(config, extra[0])!r}: does not apply to "
                                   f"[source] kind = {config.kind!r}, which reads {reads}; remove it")


@dataclass(frozen=True)
class SubjectWords:
    """How a source's subject labels are named in one-line errors.

    Attributes
    ----------
    one : str
        A valid label, with its article (``"an NSD subject 1..8"``).
    many : str
        Valid labels, plural (``"NSD subjects 1..8"``).
    example : str
        A TOML list of labels (``"[1, 2, 5, 7]"``).
    """

    one: str
    many: str
    example: str


@runtime_checkable
class SourceCheck(Protocol):
    """The result of :meth:`DataSource.check`: what a run needs, and what is missing or wrong."""

    @property
    def ok(self) -> bool:
        """True when nothing needed is missing or malformed."""
        ...

    def problem_lines(self) -> list[str]:
        """One line per problem (naming the file and what was expected)."""
        ...

    def format_table(self) -> str:
        """Everything checked, as a plain-text table."""
        ...


@runtime_checkable
class StimulusSource(Protocol):
    """The images a study's subjects saw, and their captions, by image id (an integer)."""

    def ids(self) -> np.ndarray:
        """Every image id of the study, sorted, int64."""
        ...

    def images(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """The images of ``ids``, in the order asked (duplicates allowed).

        Returns
        -------
        array of shape (n_images, height, width, 3), uint8
        """
        ...

    def batches(self, ids: Sequence[int] | np.ndarray, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(batch_ids, images)`` of the sorted unique ``ids``, ``batch_size`` at a time."""
        ...

    def captions(self, ids: Sequence[int] | np.ndarray) -> list[list[str]]:
        """The captions of each image of ``ids`` (at least one each), every id checked first."""
        ...

    def check(self, ids: Sequence[int] | np.ndarray) -> None:
        """Raise a one-line error unless the images of ``ids`` can be read (reading no image)."""
        ...

    def identity(self) -> dict[str, str]:
        """The study, as the files made from it record it.

        :meth:`origin` plus a stable fingerprint of the stimuli (compared across files to refuse
        mixing studies).
        """
        ...

    def origin(self) -> dict[str, str]:
        """Where the stimuli are, as ``metrics.json`` records it (``{"nsd_root": ...}`` for NSD)."""
        ...

    def is_simulated(self) -> bool:
        """Whether the study is simulated (not real data: a random-weights model then warns nothing)."""
        ...

    def describe(self) -> str:
        """The stimuli in words, for messages (``"NSD data (/data/nsd)"``)."""
        ...


@runtime_checkable
class DataSource(Protocol):
    """A study: its subjects, a check of its files, and ``prepare`` writing a subject's prepared file.

    Attributes
    ----------
    kind : str
        Its name in the registry (``[source] kind``).
    dataset : str
        The name of the run's feature stores (``features/<dataset>_<model>_<feature>.h5``).
    subject_words : SubjectWords
        Its subject labels in words.
    """

    kind: str
    dataset: str
    subject_words: SubjectWords

    def subjects(self) -> list[str]:
        """The labels of the study's subjects (``"1"`` ... ``"8"`` for NSD)."""
        ...

    def subject_label(self, value: object) -> str | None:
        """The label of a config value (an int or a string), or None when it names no subject of the source."""
        ...

    def require_root(self) -> None:
        """Raise :class:`~brain2image.errors.MissingFileError` unless the study's files are where the config says."""
        ...

    def require_subject(self, subject: str, settings: PrepareConfig) -> None:
        """Raise :class:`~brain2image.errors.MissingFileError` when ``subject`` is not in the study."""
        ...

    def check(self, subject: str, settings: PrepareConfig, *, trials_per_session: int | None = None) -> SourceCheck:
        """Check every file a run of ``subject`` needs, cheaply (headers only); never raises for a problem."""
        ...

    def prepare(self, subject: str, settings: PrepareConfig, out: Path, *, progress: bool = True,
                trials_per_session: int | None = None) -> Path:
        """Write ``subject``'s prepared file to ``out`` through :class:`~brain2image.formats.prepared.PreparedWriter`.

        ``trials_per_session`` overrides the source's own count (test trees); returns ``out``.
        """
        ...

    def stimuli(self) -> StimulusSource:
        """The study's images and captions."""
        ...
