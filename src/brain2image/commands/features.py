"""``brain2image features``: the command of the ``features`` stage, generated from its options.

The stage is :mod:`brain2image.stages.features`.
"""

from __future__ import annotations

from ._common import stage_register

__all__ = ["register"]

#: Add the ``features`` subcommand to an ``argparse`` subparsers object.
register = stage_register("features")
