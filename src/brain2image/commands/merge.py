"""``brain2image merge TARGET...``: join the shards of feature stores or of reconstruction folders."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ._common import add_command_parser

__all__ = ["register", "merge_target"]


def merge_target(target: str | os.PathLike, n: int | None = None) -> Path:
    """Join the shards of one feature store or reconstruction folder; returns the file written.

    Parameters
    ----------
    target : path-like
        A reconstruction folder (its ``index.shard-i-of-n.csv`` and ``config.shard-i-of-n.json``
        become ``index.csv`` and ``config.json``), or a feature store ``<name>.h5`` (or one of its
        shards): the shards ``<name>.shard-i-of-n.h5`` beside it become ``<name>.h5``.
    n : int, optional
        The number of shards, needed only when shards of several counts lie there.

    Raises
    ------
    MissingFileError, InvalidArgumentError, DataFormatError
        No shards, several counts without ``n``, a missing shard or an inconsistent set.
    """
    from ..formats.feature_store import merge_feature_shards
    from ..formats.recon_index import ReconFolder

    path = Path(target)
    if path.is_dir():
        return ReconFolder(path).merge_shards(n)
    return merge_feature_shards(path, n)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``merge`` subcommand."""
    parser = add_command_parser(
        subparsers, "merge", help="join the shards of feature stores or reconstruction folders",
        description="Join the shards written with --shard i/n: a feature store <name>.h5 from the "
        "<name>.shard-i-of-n.h5 beside it, a reconstruction folder's index.csv and config.json from its "
        "index.shard-i-of-n.csv and config.shard-i-of-n.json. Refuses a set with a missing shard, overlapping "
        "ids, or shards of other settings or studies.")
    parser.add_argument("targets", nargs="+", metavar="TARGET",
                        help="feature store <name>.h5 (or one of its shard files) or reconstruction folder")
    parser.add_argument("--n", type=int, default=None, metavar="N",
                        help="number of shards (only when shards of several counts lie beside a target)")
    parser.set_defaults(func=_merge)


def _merge(args: argparse.Namespace) -> int:
    for target in args.targets:
        print(merge_target(target, args.n))
    return 0
