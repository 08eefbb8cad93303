"""``brain2image report``: the self-contained HTML page of a run folder."""

from __future__ import annotations

import argparse

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``report`` subcommand."""
    parser = subparsers.add_parser(
        "report", help="write report.html for a run folder",
        description="Write one self-contained HTML page (reconstruction grid, metric table, decoding "
        "accuracy, encoding maps, config, timings) for a run folder made by `run` or `demo`.")
    parser.add_argument("run_dir", help="run folder")
    parser.add_argument("--n-images", type=int, default=None, help="test images in the grid")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from ..pipeline import build_report

    print(build_report(args.run_dir, n_images=args.n_images).resolve())
    return 0
