"""NSD, the first data source: the readers of an NSD tree, ``prepare``, ``check`` and the source.

The readers cover paths, the trial table, ROIs, masked betas, the stimulus brick and captions;
:class:`~.source.NSDSource` is what the registry makes of ``[source] kind = "nsd"``.

Only :mod:`brain2image.sources` imports these readers; the rest of the package reads a study
through the run's source (:func:`brain2image.sources.source_of`). The prepared file they write is
:mod:`brain2image.formats.prepared`.
"""

from __future__ import annotations

import importlib
from typing import Any

#: Public name -> submodule. Submodules load on first use, so that importing a light one
#: (``brain2image.sources.nsd.layout``, e.g. for the CLI's option defaults) does not pull in pandas and
#: scipy.io through the others.
_EXPORTS = {
    "CheckItem": "check", "CheckReport": "check", "check_nsd_tree": "check",
    "ExpDesign": "design", "load_expdesign": "design", "read_responses": "design", "trial_table": "design",
    "DEFAULT_BETA_VERSION": "layout", "SESSIONS_PER_SUBJECT": "layout", "TRIALS_PER_SESSION": "layout",
    "NSDLayout": "layout", "resolve_nsd_root": "layout",
    "DEFAULT_ROIS": "prepare", "prepare_subject": "prepare", "resolve_sessions": "prepare",
    "RoiSpec": "rois", "parse_roi_spec": "rois",
    "NSDSource": "source", "NSDStimuli": "source",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)


__all__ = [
    "CheckItem",
    "CheckReport",
    "DEFAULT_BETA_VERSION",
    "DEFAULT_ROIS",
    "ExpDesign",
    "NSDLayout",
    "NSDSource",
    "NSDStimuli",
    "RoiSpec",
    "SESSIONS_PER_SUBJECT",
    "TRIALS_PER_SESSION",
    "check_nsd_tree",
    "load_expdesign",
    "parse_roi_spec",
    "prepare_subject",
    "read_responses",
    "resolve_nsd_root",
    "resolve_sessions",
    "trial_table",
]
