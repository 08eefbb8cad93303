"""``brain2image prepare``: the command of the ``prepare`` stage, generated from its options.

The stage is :mod:`brain2image.stages.prepare`.
"""

from __future__ import annotations

from ..config import parse_sessions
from ._common import stage_register

__all__ = ["register", "parse_sessions"]

#: Add the ``prepare`` subcommand to an ``argparse`` subparsers object.
register = stage_register("prepare")
