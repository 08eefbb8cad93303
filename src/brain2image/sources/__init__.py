"""Data sources: where a study's brain data, images and captions come from.

A :class:`~.base.DataSource` names its subjects, checks its files and writes a subject's prepared
file; its :class:`~.base.StimulusSource` serves the images and captions by id. The run config's
``[source]`` table picks one by ``kind`` from the registry (:mod:`.registry`, entry-point group
``brain2image.sources``); NSD (:mod:`.nsd`) is the first, and the only code that reads an NSD tree.
"""

from __future__ import annotations

from .base import DataSource, SourceCheck, StimulusSource, SubjectWords, numeric_label
from .registry import (
    ENTRY_POINT_GROUP,
    get_source,
    register_source,
    source_kinds,
    source_of,
    stimuli_of,
    stimuli_of_record,
    unregister_source,
)

__all__ = ["DataSource", "StimulusSource", "SourceCheck", "SubjectWords", "numeric_label", "ENTRY_POINT_GROUP",
           "get_source", "register_source", "unregister_source", "source_kinds", "source_of", "stimuli_of",
           "stimuli_of_record"]
