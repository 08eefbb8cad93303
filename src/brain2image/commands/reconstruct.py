"""``brain2image reconstruct``: the command of the ``reconstruct`` stage, generated from its options.

The stage is :mod:`brain2image.stages.reconstruct`.
"""

from __future__ import annotations

from ._common import stage_register

__all__ = ["register"]

#: Add the ``reconstruct`` subcommand to an ``argparse`` subparsers object.
register = stage_register("reconstruct")
