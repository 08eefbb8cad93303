"""NSD as a data source: :class:`NSDSource` (subjects 1..8, ``check``, ``prepare``) and its stimuli.

Registered as ``nsd`` in the ``brain2image.sources`` entry-point group; a run config's top-level
``nsd_root`` is shorthand for ``[source] kind = "nsd", root = ...``.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ...errors import InvalidArgumentError, MissingFileError
from ..base import SubjectWords, refuse_source_keys
from .layout import SESSIONS_PER_SUBJECT, SPACES, TRIALS_PER_SESSION, NSDLayout, is_simulated_tree
from .stimuli import (
    check_stimuli,
    iter_stimuli,
    load_captions,
    read_stimuli,
    stimuli_path,
    study_provenance,
)

if TYPE_CHECKING:
    from ...config import PrepareConfig, SourceConfig
    from .check import CheckReport

__all__ = ["NSDSource", "NSDStimuli"]

#: What a run needs at the NSD root, for the one-line errors of :meth:`NSDSource.require_root`.
_EXPECTED_ROOT = "expected the NSD root, the folder holding nsddata/, nsddata_betas/ and nsddata_stimuli/"


class NSDStimuli:
    """NSD's images (the ``imgBrick`` of ``nsd_stimuli.hdf5``) and their COCO captions, by 73k id.

    Parameters
    ----------
    root : path-like or None
        NSD root; None reads ``$NSD_ROOT``.
    """

    def __init__(self, root: str | os.PathLike | None) -> None:
        self.root = root

    def _root(self) -> str | os.PathLike:
        """The root as given (never resolved, so messages name it as the user did), else ``$NSD_ROOT``."""
        if self.root is not None:
            return self.root
        root = os.environ.get("NSD_ROOT")
        if not root:
            raise MissingFileError("no NSD root given: pass --nsd-root / nsd_root= or set $NSD_ROOT")
        return root

    def ids(self) -> np.ndarray:
        """``0 .. n_images - 1`` of the brick (its header only)."""
        shape, _ = check_stimuli(stimuli_path(self._root()), np.zeros(0, dtype=np.int64))
        return np.arange(shape[0], dtype=np.int64)

    def images(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """The images of 73k ``ids`` in the order asked, shape (n_images, 425, 425, 3) uint8."""
        return read_stimuli(stimuli_path(self._root()), np.asarray(ids, dtype=np.int64))

    def batches(self, ids: Sequence[int] | np.ndarray, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(batch_ids, images)`` of the sorted unique ``ids``, one brick read per batch."""
        return iter_stimuli(stimuli_path(self._root()), np.asarray(ids, dtype=np.int64), batch_size)

    def captions(self, ids: Sequence[int] | np.ndarray) -> list[list[str]]:
        """COCO captions of each id (:func:`~.stimuli.load_captions`)."""
        return load_captions(self._root(), np.asarray(ids, dtype=np.int64))

    def check(self, ids: Sequence[int] | np.ndarray) -> None:
        """The brick's header, and that it holds every id (:func:`~.stimuli.check_stimuli`)."""
        check_stimuli(stimuli_path(self._root()), np.asarray(ids, dtype=np.int64))

    def identity(self) -> dict[str, str]:
        """``nsd_root`` (resolved) and ``stimuli_identity`` (:func:`~.stimuli.study_provenance`)."""
        return study_provenance(self._root())

    def origin(self) -> dict[str, str]:
        """``{"nsd_root": <resolved root>}``."""
        return {"nsd_root": str(Path(self._root()).expanduser().resolve())}

    def is_simulated(self) -> bool:
        """Whether the root is a tree written by ``brain2image simulate`` (:func:`~.layout.is_simulated_tree`)."""
        return is_simulated_tree(self._root())

    def describe(self) -> str:
        """``NSD data (<root>)``."""
        return f"NSD data ({self._root()})"


class NSDSource:
    """The Natural Scenes Dataset in its own layout (``docs/nsd_format.md``).

    Parameters
    ----------
    config : SourceConfig
        ``kind = "nsd"``; ``root``: the NSD root (None reads ``$NSD_ROOT``).
    """

    kind = "nsd"
    dataset = "nsd"
    subject_words = SubjectWords(one="an NSD subject 1..8", many="NSD subjects 1..8", example="[1, 2, 5, 7]")

    def __init__(self, config: SourceConfig) -> None:
        refuse_source_keys(config, allowed=("space",))
        if config.space is not None and config.space not in SPACES:
            raise InvalidArgumentError(f"[source] space = {config.space!r} (--space): expected one of "
                                       f"{', '.join(SPACES)} for an NSD source")
        self.root = config.root
        self.space = config.space

    def subjects(self) -> list[str]:
        """``"1"`` ... ``"8"``."""
        return [str(subject) for subject in SESSIONS_PER_SUBJECT]

    def subject_label(self, value: object) -> str | None:
        """``"3"`` for 3 or ``"3"`` (or ``"03"``); None for anything but a subject 1..8."""
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            text = str(int(value))
        elif isinstance(value, str) and value.strip().isdigit():
            text = str(int(value.strip()))
        else:
            return None
        return text if text in self.subjects() else None

    def _space(self, settings: PrepareConfig) -> str:
        """``[source] space`` when given, else ``[prepare] space``; both given and different is an error."""
        if self.space is not None and settings.space not in (self.space, "func1pt8mm"):
            raise InvalidArgumentError(f"[source] space = {self.space!r} and [prepare] space = {settings.space!r}: "
                                       "expected one of the two keys (they name the same thing)")
        return self.space or settings.space

    def _layout(self, subject: str, settings: PrepareConfig) -> NSDLayout:
        return NSDLayout(self.root, int(subject), space=self._space(settings), beta_version=settings.beta_version)

    def require_root(self) -> None:
        """The root must be a folder holding ``nsddata/``.

        Raises
        ------
        MissingFileError
        """
        if self.root is None:
            raise MissingFileError(f"nsd_root: no NSD root given; {_EXPECTED_ROOT}")
        root = Path(self.root)
        if not root.is_dir():
            raise MissingFileError(f"nsd_root = {self.root!r}: folder not found; {_EXPECTED_ROOT}")
        if not (root / "nsddata").is_dir():
            raise MissingFileError(f"nsd_root = {self.root!r}: no nsddata/ folder in it; {_EXPECTED_ROOT}")

    def require_subject(self, subject: str, settings: PrepareConfig) -> None:
        """The subject's ``nsddata/ppdata/subjXX`` and betas folders must exist.

        Raises
        ------
        MissingFileError
            Naming the subject and the folder looked at.
        """
        layout = self._layout(subject, settings)
        for folder in (layout.root / "nsddata" / "ppdata" / layout.subj, layout.betas_dir()):
            if not folder.is_dir():
                present = [label for label in self.subjects()
                           if (layout.root / "nsddata" / "ppdata" / f"subj{int(label):02d}").is_dir()]
                raise MissingFileError(f"subject {subject} is not in the NSD tree {layout.root}: folder {folder} "
                                       f"not found; subjects present: {', '.join(present) or 'none'}")

    def check(self, subject: str, settings: PrepareConfig, *, trials_per_session: int | None = None) -> CheckReport:
        """Every file a run of ``subject`` needs (:func:`~.check.check_nsd_tree`)."""
        from .check import check_nsd_tree

        return check_nsd_tree(self._layout(subject, settings), settings.sessions, list(settings.rois),
                              settings.beta_format, trials_per_session=trials_per_session or TRIALS_PER_SESSION)

    def prepare(self, subject: str, settings: PrepareConfig, out: Path, *, progress: bool = True,
                trials_per_session: int | None = None) -> Path:
        """Write ``subject``'s prepared file (:func:`~.prepare.prepare_subject`); returns ``out``."""
        from .prepare import prepare_subject

        return prepare_subject(
            self.root, int(subject), out, rois=tuple(settings.rois), sessions=settings.sessions,
            beta_version=settings.beta_version, beta_format=settings.beta_format, space=self._space(settings),
            scale=settings.scale, zscore_sessions=settings.zscore_sessions,
            trials_per_session=trials_per_session or TRIALS_PER_SESSION, progress=progress)

    def stimuli(self) -> NSDStimuli:
        """The brick and the captions under the root."""
        return NSDStimuli(self.root)
