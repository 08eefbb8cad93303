"""``brain2image encode``: the command of the ``encode`` stage, generated from its options.

The stage is :mod:`brain2image.stages.encode`.
"""

from __future__ import annotations

from ._common import stage_register

__all__ = ["register"]

#: Add the ``encode`` subcommand to an ``argparse`` subparsers object.
register = stage_register("encode")
