"""``brain2image merge TARGET...``: join the shards of feature stores or reconstruction folders, or decoder parts."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ._common import add_command_parser

__all__ = ["register", "merge_target"]


def merge_target(target: str | os.PathLike, n: int | None = None) -> Path:
    """Join the shards of one feature store or reconstruction folder, or a decoder's parts; returns the file written.

    Parameters
    ----------
    target : path-like
        A reconstruction folder (its ``index.shard-i-of-n.csv`` and ``config.shard-i-of-n.json``
        become ``index.csv`` and ``config.json``), or a feature store ``<name>.h5`` (or one of its
        shards): the shards ``<name>.shard-i-of-n.h5`` beside it become ``<name>.h5``; or a decoder
        file (or one of its parts): the parts ``<name>.part-i-of-n.h5`` of ``brain2image fit
        --target-part`` beside it become ``<name>.h5``.
    n : int, optional
        The number of shards (parts), needed only when several counts lie there.

    Raises
    ------
    MissingFileError, InvalidArgumentError, DataFormatError
        No shards, several counts without ``n``, a missing shard or an inconsistent set.
    """
    from ..decoding.parts import merge_decoder_parts
    from ..formats.feature_store import merge_feature_shards
    from ..formats.partitions import PART, choose_count, piece_counts, whole_path
    from ..formats.recon_index import ReconFolder

    path = Path(target)
    if path.is_dir():
        return ReconFolder(path).merge_shards(n)
    whole = whole_path(path)
    if not piece_counts(whole, PART):
        return merge_feature_shards(path, n)
    return merge_decoder_parts(whole, choose_count(whole, PART, n))


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``merge`` subcommand."""
    parser = add_command_parser(
        subparsers, "merge", help="join the shards of feature stores or reconstruction folders, or decoder parts",
        description="Join the shards written with --shard i/n: a feature store <name>.h5 from the "
        "<name>.shard-i-of-n.h5 beside it, a reconstruction folder's index.csv and config.json from its "
        "index.shard-i-of-n.csv and config.shard-i-of-n.json; and the parts of a decoder written with fit "
        "--target-part i/n: <name>.h5 from the <name>.part-i-of-n.h5 beside it. Refuses a set with a missing "
        "shard or part, overlapping ids, or shards or parts of other settings or studies.")
    parser.add_argument("targets", nargs="+", metavar="TARGET",
                        help="feature store <name>.h5 (or one of its shard files), reconstruction folder, or "
                        "decoder file <name>.h5 (or one of its part files)")
    parser.add_argument("--n", type=int, default=None, metavar="N",
                        help="number of shards or parts (only when several counts lie beside a target)")
    parser.set_defaults(func=_merge)


def _merge(args: argparse.Namespace) -> int:
    for target in args.targets:
        print(merge_target(target, args.n))
    return 0
