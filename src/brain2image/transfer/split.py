"""The splits that keep a transfer honest: held-out test images and the data of the first k sessions.

* **Candidates**: images of the new subject's test set (its repeated images) that every reference
  also has in its test set and in no reference's training set (the reference decoders are fitted
  on their training trials only). Images are matched by stimulus identity
  (:meth:`~brain2image.formats.prepared.PreparedData.stimulus_keys`: NSD's 73k id, or a content
  identity for other sources).
* **Test images**: a seeded ``test_fraction`` of the candidates. No fit ever sees them: not the
  alignment maps, not the new subject's own decoder, not the references' decoders.
* **The new subject's data**: every trial of its first k sessions (scanning order) whose image is
  not a test image. The own decoder is fitted on these trials; an alignment map on the images among
  them that the reference saw too (each averaged over its trials).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._io import atomic_path
from ..errors import DataFormatError, InvalidArgumentError
from ..formats.prepared import PreparedData
from ..stats import average_repeats

__all__ = ["MIN_TEST_IMAGES", "ReferenceSubject", "SubjectRows", "TransferSplit", "make_split", "image_means",
           "read_rows", "session_rows"]

#: Fewest held-out test images a transfer is scored on.
MIN_TEST_IMAGES = 4


@dataclass(frozen=True)
class ReferenceSubject:
    """A reference subject: its label, prepared file and one full-data decoder file per target."""

    label: int | str
    prepared: Path
    decoders: dict[str, Path]


@dataclass(frozen=True)
class SubjectRows:
    """Rows of one split of a prepared file: their image ids and which rows of the split they are."""

    split: str
    rows: np.ndarray  # (n,) int64, sorted row numbers of the split
    ids: np.ndarray   # (n,) int64 image ids


@dataclass
class TransferSplit:
    """Which images each fit may see, and the held-out test images (ids of the new subject's file).

    Attributes
    ----------
    test_ids : ndarray of int64
        Held-out test images, sorted.
    candidates : ndarray of int64
        Every image that could be a test image (see the module docstring).
    own_rows : list of SubjectRows
        The new subject's trials of its first k sessions whose image is not a test image.
    sessions : int
        k (the number of sessions taken).
    n_sessions : int
        Sessions on disk.
    seed, test_fraction
        Of the split.
    alignment_ids : dict of str to ndarray
        Per reference label, the new subject's image ids its alignment map is fitted on (set by
        :func:`~brain2image.transfer.decoders.transfer_decoders`).
    """

    test_ids: np.ndarray
    candidates: np.ndarray
    own_rows: list[SubjectRows]
    sessions: int
    n_sessions: int
    seed: int
    test_fraction: float
    alignment_ids: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def own_ids(self) -> np.ndarray:
        """Sorted unique image ids of the new subject's kept trials."""
        return np.unique(np.concatenate([part.ids for part in self.own_rows]))

    def to_dict(self) -> dict[str, Any]:
        """JSON form (``transfer/split.json``)."""
        return {"seed": self.seed, "test_fraction": self.test_fraction, "sessions": self.sessions,
                "n_sessions": self.n_sessions, "test_ids": self.test_ids.tolist(),
                "candidates": self.candidates.tolist(), "own_train_ids": self.own_ids.tolist(),
                "n_own_trials": int(sum(len(part.rows) for part in self.own_rows)),
                "alignment_ids": {label: ids.tolist() for label, ids in self.alignment_ids.items()}}

    def write(self, path: Path) -> Path:
        """Write :meth:`to_dict` atomically."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=1))
        return path


def _trials(prepared: PreparedData, split: str) -> tuple[np.ndarray, np.ndarray]:
    """``ids`` and 1-based ``session`` of every row of a split."""
    trials = prepared.trials(split)
    if "session" not in trials:
        raise DataFormatError(f"{prepared.path}: no '/{split}/session'; expected the session of every trial")
    return np.asarray(trials["ids"], np.int64), np.asarray(trials["session"], np.int64)


def session_rows(prepared: PreparedData, sessions: int | None, exclude: np.ndarray) -> tuple[list[SubjectRows], int]:
    """The trials (train and single test trials) of the first ``sessions`` sessions, ``exclude`` images left out.

    Returns
    -------
    rows : list of SubjectRows
    n_sessions : int
        Sessions on disk.

    Raises
    ------
    InvalidArgumentError
        When ``sessions`` is more than the sessions on disk.
    """
    parts = {split: _trials(prepared, split) for split in ("train", "test_trials")}
    on_disk = sorted(set(np.concatenate([s for _, s in parts.values()]).tolist()))
    if sessions is not None and sessions > len(on_disk):
        raise InvalidArgumentError(f"[transfer] sessions = {sessions}: {prepared.path} holds {len(on_disk)} "
                                   f"session(s); expected at most {len(on_disk)} (or 'all')")
    kept = set(on_disk if sessions is None else on_disk[:sessions])
    out = []
    for split, (ids, session) in parts.items():
        rows = np.flatnonzero(np.isin(session, list(kept)) & ~np.isin(ids, exclude))
        out.append(SubjectRows(split, rows.astype(np.int64), ids[rows]))
    return out, len(on_disk)


def read_rows(prepared: PreparedData, roi: str, rows: Sequence[SubjectRows]) -> tuple[np.ndarray, np.ndarray]:
    """The ROI's betas of ``rows`` (only those rows are read) and their image ids."""
    blocks = [prepared.read_rows(roi, part.split, part.rows) for part in rows]
    return np.concatenate(blocks), np.concatenate([part.ids for part in rows])


def image_means(X: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows averaged per image id (:func:`~brain2image.stats.average_repeats`): (sorted unique ids, means)."""
    means, unique, _ = average_repeats(X, ids)
    return unique, means


def _reference_keys(reference: ReferenceSubject) -> tuple[set[str], set[str]]:
    """Stimulus keys of a reference's test images and of its training images."""
    prepared = PreparedData(reference.prepared)
    test_ids = np.asarray(prepared.trials("test")["ids"], np.int64)
    train_ids = np.unique(np.asarray(prepared.trials("train")["ids"], np.int64))
    return set(prepared.stimulus_keys(test_ids).tolist()), set(prepared.stimulus_keys(train_ids).tolist())


def make_split(new: PreparedData, references: Sequence[ReferenceSubject], *, sessions: int | None,
               test_fraction: float, seed: int) -> TransferSplit:
    """Held-out test images and the new subject's rows of its first ``sessions`` sessions.

    Parameters
    ----------
    new : PreparedData
        The new subject.
    references : sequence of ReferenceSubject
    sessions : int or None
        k; ``None``: every session.
    test_fraction : float
        Share of the candidates held out (at least :data:`MIN_TEST_IMAGES`).
    seed : int

    Raises
    ------
    InvalidArgumentError
        Too few shared images for a held-out test set, or ``sessions`` beyond those on disk.
    """
    new_test = np.asarray(new.trials("test")["ids"], np.int64)
    keys = new.stimulus_keys(new_test)
    usable = np.ones(len(new_test), bool)
    for reference in references:
        ref_test, ref_train = _reference_keys(reference)
        usable &= np.asarray([k in ref_test and k not in ref_train for k in keys.tolist()], bool)
    candidates = np.sort(new_test[usable])
    n_test = int(round(test_fraction * len(candidates)))
    if n_test < MIN_TEST_IMAGES or len(candidates) - n_test < 1:
        labels = [r.label for r in references]
        raise InvalidArgumentError(
            f"{new.path}: {len(candidates)} test image(s) are shared with every reference {labels} (and in none of "
            f"their training sets); [transfer] test_fraction = {test_fraction} holds out {n_test}; expected at least "
            f"{MIN_TEST_IMAGES} held-out images and one left to align")
    rng = np.random.default_rng(seed)
    test_ids = np.sort(rng.choice(candidates, size=n_test, replace=False))
    rows, n_sessions = session_rows(new, sessions, test_ids)
    return TransferSplit(test_ids=test_ids, candidates=candidates, own_rows=rows,
                         sessions=n_sessions if sessions is None else sessions, n_sessions=n_sessions,
                         seed=seed, test_fraction=test_fraction)
