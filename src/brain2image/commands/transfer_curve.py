"""``brain2image transfer-curve CONFIG --out DIR``: the learning curve of cross-subject transfer."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import subject_token
from ..stages.options import AccumulateList
from ._common import add_command_parser, show_progress

__all__ = ["register"]


def _sessions_token(text: str) -> int | str:
    """A session count or ``all`` (``argparse`` type)."""
    if text == "all" or (text.isdigit() and int(text) >= 1):
        return "all" if text == "all" else int(text)
    raise argparse.ArgumentTypeError(f"{text!r}: expected an integer of at least 1 or 'all'")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``transfer-curve`` subcommand."""
    parser = add_command_parser(
        subparsers, "transfer-curve",
        help="learning curve of a new subject: own decoder vs cross-subject transfer over its first k sessions",
        description="Run one transfer run per point (the new subject's first k sessions; its own decoder on them, "
        "and its activity mapped into the reference subjects' decoders) into <out>/k<k>_<decoder>/, all scored on "
        "the same held-out test images; write <out>/curve.csv, curve.json and curve.png (docs/transfer.md). "
        "CONFIG is a run config of the new subject whose [transfer] table names reference_subjects and "
        "reference_run, the study folder where prepare, features and fit of the new subject and the references run "
        "first when not done (subjXX/ each); its seed and test_fraction hold for every point. Finished points are "
        "resumed.")
    parser.add_argument("config", help="TOML run config with a [transfer] table")
    parser.add_argument("--out", required=True, help="curve folder (created; reruns resume)")
    parser.add_argument("--sessions", nargs="+", action=AccumulateList, type=_sessions_token, default=None, metavar="K",
                        help="session counts of the curve (default: 1 2 4 ... below the subject's sessions, all)")
    parser.add_argument("--decoders", nargs="+", action=AccumulateList, choices=("own", "transfer", "transfer+own"),
                        default=["own", "transfer"], help="decoders at each K; own at all is the full-data line")
    parser.add_argument("--alignment-images", nargs="+", action=AccumulateList, type=int, default=None, metavar="N",
                        help="also a curve of transfer over alignment-set sizes (at --alignment-sessions)")
    parser.add_argument("--alignment-sessions", type=_sessions_token, default="all", metavar="K",
                        help="session count of the alignment-size curve")
    parser.add_argument("--subject", type=subject_token, default=None, metavar="LABEL",
                        help="the new subject (default: the config's subject)")
    parser.add_argument("--references", nargs="+", action=AccumulateList, type=subject_token, default=None,
                        metavar="LABEL",
                        help="reference subjects (default: [transfer] reference_subjects)")
    parser.add_argument("--reference-run", default=None, metavar="DIR",
                        help="study folder of the references (default: [transfer] reference_run)")
    parser.add_argument("--n-samples", type=int, default=1, help="reconstruction samples per test image")
    parser.add_argument("--methods", nargs="+", action=AccumulateList, default=["z_plus_c"], metavar="METHOD",
                        help="reconstruction methods scored (the first is plotted)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    """Run the curve; print its table and the folder."""
    from ..pipeline import load_run_config
    from ..transfer_curve import transfer_curve

    config = load_run_config(args.config)  # [transfer] reference_run: relative to the config file
    curve = transfer_curve(config, out_dir=args.out, subject=args.subject, references=args.references,
                           reference_run=args.reference_run, sessions=args.sessions, decoders=args.decoders,
                           alignment_sizes=args.alignment_images, alignment_sessions=args.alignment_sessions,
                           n_samples=args.n_samples, methods=args.methods, progress=show_progress(args))
    print(curve.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(Path(args.out).expanduser().resolve() / "curve.csv")
    return 0
