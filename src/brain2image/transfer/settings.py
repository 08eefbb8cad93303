"""The settings of the transfer stage: a run config's ``[transfer]`` table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..config import subject_token
from ..config_checks import _field
from ..errors import InvalidArgumentError

__all__ = ["ALIGNMENTS", "COMBINES", "DECODER_METHODS", "TransferSettings", "check_transfer_settings",
           "session_count"]

#: What the run's decoder files hold: the transfer, the new subject's own decoder on the same
#: sessions (the baseline), or the mean of both.
DECODER_METHODS = ("transfer", "own", "transfer+own")
#: How the references' predictions are combined.
COMBINES = ("mean", "weighted")
#: Maps from the new subject's voxels to a reference subject's.
ALIGNMENTS = ("ridge",)


def _sessions_token(text: Any) -> int | str:
    """``all`` or a number of sessions."""
    text = str(text)
    return int(text) if text.isdigit() else text


@dataclass
class TransferSettings:
    """A new subject decoded through reference subjects' decoders (``[transfer]``).

    Attributes
    ----------
    reference_subjects : list of int or str
        Subjects whose full-data decoders are reused.
    reference_run : str
        Study folder of the references (``brain2image run`` with ``subjects`` = the references):
        ``<reference_run>/subjXX/prepared/subjXX.h5`` and ``decoders/subjXX_<target>_<roi>.h5``.
    sessions : int or "all"
        The new subject's first k sessions, in scanning order.
    alignment, combine, decoder, test_fraction, alignment_images, seed
        See each field's help.
    """

    reference_subjects: list[int | str] = _field(
        factory=list, label=True, nargs="+", parse=subject_token, metavar="LABEL",
        help="subjects whose full-data decoders the new subject is decoded through")
    reference_run: str = _field(
        "", help="study folder of the references (brain2image run with subjects = the references): "
                 "<reference_run>/subjXX/prepared/subjXX.h5 and decoders/subjXX_<target>_<roi>.h5; relative to "
                 "the config file")
    sessions: int | str = _field(1, label=True, parse=_sessions_token, metavar="K",
                                 help="the new subject's first K sessions, in scanning order, or 'all'")
    alignment: str = _field("ridge", choices=ALIGNMENTS,
                            help="map from the new subject's ROI voxels to each reference's (alpha by CV over images)")
    combine: str = _field("weighted", choices=COMBINES,
                          help="the references' predictions: their mean, or weighted by each alignment map's "
                               "cross-validated R^2")
    decoder: str = _field("transfer", choices=DECODER_METHODS,
                          help="what the run's decoder files hold: the transfer, the new subject's own decoder on "
                               "the same sessions (the baseline), or the mean of both")
    test_fraction: float = _field(0.5, gt=0.0, max=0.9,
                                  help="share of the images every subject saw (repeated test images) held out as "
                                       "the test set; the rest may align")
    alignment_images: int = _field(0, min=0, help="at most this many alignment images (a seeded subset; 0: all)")
    seed: int = _field(0, min=0, help="seed of the held-out split and of the alignment subset")


def session_count(sessions: int | str, where: str) -> int | None:
    """``sessions`` as a count (``None``: all); refuses anything else in one line."""
    if sessions == "all":
        return None
    if isinstance(sessions, bool) or not isinstance(sessions, int) or sessions < 1:
        raise InvalidArgumentError(f"{where}[transfer] sessions = {sessions!r}: expected an integer >= 1 or 'all'")
    return int(sessions)


def check_transfer_settings(settings: TransferSettings, subject: int | str, where: str = "") -> None:
    """Refuse settings that cannot make a transfer, in one line each.

    Parameters
    ----------
    settings : TransferSettings
    subject : int or str
        The new subject (the run's).
    where : str
        Prefix of the messages (a file name and ``": "``), may be empty.

    Raises
    ------
    InvalidArgumentError
    """
    session_count(settings.sessions, where)
    refs = settings.reference_subjects
    if not refs or not all(isinstance(r, (int, str)) and not isinstance(r, bool) for r in refs):
        raise InvalidArgumentError(f"{where}[transfer] reference_subjects = {refs!r}: expected a non-empty list of "
                                   "subject labels, e.g. [2, 5, 7]")
    if len(set(map(str, refs))) != len(refs):
        raise InvalidArgumentError(f"{where}[transfer] reference_subjects = {refs!r}: expected each subject once")
    if str(subject) in map(str, refs):
        raise InvalidArgumentError(f"{where}[transfer] reference_subjects = {refs!r} holds the new subject "
                                   f"{subject!r}; expected other subjects")
    if not settings.reference_run:
        raise InvalidArgumentError(f"{where}[transfer] reference_run is not set; expected the study folder of the "
                                   "references (brain2image run with subjects = the references)")
