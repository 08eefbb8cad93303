"""``brain2image prepare``: NSD tree -> prepared_subjXX.h5 (or ``--check`` the tree)."""

from __future__ import annotations

import argparse
import sys

from ..nsd.check import check_nsd_tree
from ..nsd.layout import BETA_FORMATS, DEFAULT_BETA_VERSION, SPACES, TRIALS_PER_SESSION, NSDLayout
from ..nsd.prepare import DEFAULT_ROIS, prepare_subject

__all__ = ["register", "run", "parse_sessions"]


def parse_sessions(text: str | None) -> int | list[int] | None:
    """``37`` -> a count; ``1,2,5`` or ``1-3,7`` -> a list; None -> every session on disk."""
    if text is None:
        return None
    text = text.strip()
    if text.isdigit():
        return int(text)
    sessions: list[int] = []
    for part in text.split(","):
        first, sep, last = part.strip().partition("-")
        try:
            sessions.extend(range(int(first), int(last) + 1) if sep else [int(first)])
        except ValueError as error:
            raise argparse.ArgumentTypeError(
                f"--sessions {text!r}: expected a count (37) or a list (1,2,5 or 1-3,7)") from error
    return sessions


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``prepare`` subcommand."""
    parser = subparsers.add_parser(
        "prepare", help="mask NSD single-trial betas to ROIs and split train/test",
        description="Read an NSD tree (betas, ROIs, design) and write prepared_subjXX.h5 with "
        "ROI-masked single-trial betas: train = non-shared trials, test = shared images averaged "
        "over repetitions. --check only checks the needed files.")
    parser.add_argument("--nsd-root", default=None, help="NSD root (default: $NSD_ROOT)")
    parser.add_argument("--subject", type=int, required=True, help="subject 1..8")
    parser.add_argument("--out", default=None, help="output .h5 (required unless --check)")
    parser.add_argument("--roi", action="append", dest="rois", default=None, metavar="SPEC",
                        help="atlas:label or atlas (repeatable; default: "
                        + " ".join(DEFAULT_ROIS) + ")")
    parser.add_argument("--sessions", type=parse_sessions, default=None,
                        help="a count (37) or a list (1,2,5 / 1-3); default: all on disk")
    parser.add_argument("--format", dest="beta_format", choices=BETA_FORMATS, default="hdf5")
    parser.add_argument("--space", choices=SPACES, default="func1pt8mm")
    parser.add_argument("--beta-version", default=DEFAULT_BETA_VERSION)
    parser.add_argument("--zscore-sessions", action="store_true",
                        help="z-score each voxel over each session's trials")
    parser.add_argument("--raw-int16", action="store_true",
                        help="keep the stored values (int16 = %% signal change x 300)")
    parser.add_argument("--trials-per-session", type=int, default=TRIALS_PER_SESSION,
                        help=argparse.SUPPRESS)
    parser.add_argument("--check", action="store_true",
                        help="check the needed files (exists, opens, shape) and exit 1 on problems")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``prepare`` (or ``prepare --check``)."""
    rois = args.rois or list(DEFAULT_ROIS)
    if args.check:
        layout = NSDLayout(args.nsd_root, args.subject, space=args.space,
                           beta_version=args.beta_version)
        sessions = args.sessions
        if sessions is None:
            sessions = layout.sessions_on_disk(args.beta_format)
        elif isinstance(sessions, int):
            sessions = list(range(1, sessions + 1))
        report = check_nsd_tree(layout, sessions, rois, args.beta_format,
                                trials_per_session=args.trials_per_session)
        print(report.format_table())
        if not sessions:
            print(f"no beta files found in {layout.betas_dir()}", file=sys.stderr)
            return 1
        return 0 if report.ok else 1
    if args.out is None:
        print("brain2image prepare: error: --out is required unless --check", file=sys.stderr)
        return 2
    path = prepare_subject(
        args.nsd_root, args.subject, args.out, rois=rois, sessions=args.sessions,
        beta_version=args.beta_version, beta_format=args.beta_format, space=args.space,
        scale="raw" if args.raw_int16 else "percent", zscore_sessions=args.zscore_sessions,
        trials_per_session=args.trials_per_session, progress=not args.no_progress)
    print(path)
    return 0
