"""NSD readers: paths, trial table, ROIs, masked betas, ``prepare`` and ``check``.

The prepared file they write is :mod:`brain2image.formats.prepared`.
"""

from .check import CheckItem, CheckReport, check_nsd_tree
from .design import ExpDesign, load_expdesign, read_responses, trial_table
from .layout import (
    DEFAULT_BETA_VERSION,
    SESSIONS_PER_SUBJECT,
    TRIALS_PER_SESSION,
    NSDLayout,
    resolve_nsd_root,
)
from .prepare import DEFAULT_ROIS, prepare_subject, resolve_sessions
from .rois import RoiSpec, parse_roi_spec

__all__ = [
    "CheckItem",
    "CheckReport",
    "DEFAULT_BETA_VERSION",
    "DEFAULT_ROIS",
    "ExpDesign",
    "NSDLayout",
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
