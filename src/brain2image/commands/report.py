"""``brain2image report``: the command of the ``report`` stage, generated from its options.

The stage is :mod:`brain2image.stages.report`.
"""

from __future__ import annotations

from ._common import stage_register

__all__ = ["register"]

#: Add the ``report`` subcommand to an ``argparse`` subparsers object.
register = stage_register("report")
