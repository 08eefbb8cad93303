"""What study a file was made from, and the check that inputs come from one study.

Feature stores, decoder files and prepared files record the study they were computed from in the
attribute :data:`STUDY_KEY`; :func:`require_same_study` refuses inputs whose records differ (and,
with ``key="subject"``, inputs of different subjects).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataFormatError

__all__ = ["STUDY_KEY", "require_same_study", "plain_value"]

logger = logging.getLogger(__name__)

#: The study a file was made from: size and sampled SHA-256 of the stimulus file
#: (:func:`brain2image.sources.nsd.stimuli.stimuli_identity`); absent from files written before it was recorded.
STUDY_KEY = "stimuli_identity"


def plain_value(value: Any) -> Any:
    """An HDF5 attribute as a plain Python value (a NumPy scalar becomes its Python number or string)."""
    return value.item() if isinstance(value, np.generic) else value


def require_same_study(files: Sequence[tuple[str | os.PathLike, Mapping[str, Any]]], key: str = STUDY_KEY,
                       *, warn_missing: bool = True) -> None:
    """Refuse input files whose attribute ``key`` differs; log a warning for files without it.

    Parameters
    ----------
    files : sequence of (path, attrs)
        The files and their attributes; the first file that records ``key`` is the reference.
    key : str
        ``stimuli_identity`` (the study), or ``subject``.
    warn_missing : bool
        Log a warning for each file without ``key`` (files written before it was recorded).

    Raises
    ------
    DataFormatError
        Naming both files, the field and both values.
    """
    known = [(Path(p), plain_value(a[key])) for p, a in files if a.get(key) is not None and a.get(key) != ""]
    if warn_missing and known:
        for path, attrs in files:
            if attrs.get(key) is None or attrs.get(key) == "":
                logger.warning("%s has no attribute '%s' (written before it was recorded); not checked against "
                               "%s", path, key, known[0][0])
    for path, value in known[1:]:
        if value != known[0][1]:
            raise DataFormatError(f"{path}: field '{key}' is {value!r} but {known[0][0]} has {known[0][1]!r}; "
                                  "expected inputs from the same study")
