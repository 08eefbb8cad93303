"""``brain2image fit``: the command of the ``fit`` stage, generated from its options.

The stage is :mod:`brain2image.stages.fit`.
"""

from __future__ import annotations

from ._common import stage_register

__all__ = ["register"]

#: Add the ``fit`` subcommand to an ``argparse`` subparsers object.
register = stage_register("fit")
