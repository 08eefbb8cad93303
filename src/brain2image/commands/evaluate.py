"""``brain2image evaluate``: the command of the ``evaluate`` stage, generated from its options.

The stage is :mod:`brain2image.stages.evaluate`.
"""

from __future__ import annotations

from ._common import stage_register

__all__ = ["register"]

#: Add the ``evaluate`` subcommand to an ``argparse`` subparsers object.
register = stage_register("evaluate")
