"""``brain2image run CONFIG.toml``: every stage of a real study, skipping work already done."""

from __future__ import annotations

import argparse

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``run`` subcommand."""
    parser = subparsers.add_parser(
        "run", help="run all stages for a study described by a TOML config (resumable)",
        description="prepare → features → fit → reconstruct → evaluate → encode → report, as set in "
        "CONFIG (see examples/nsd_subj01_sd14.toml). Stages whose outputs exist are skipped.")
    parser.add_argument("config", help="TOML run config")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from ..pipeline import load_run_config, run_pipeline

    report = run_pipeline(load_run_config(args.config), progress=not args.no_progress)
    print(report.resolve())
    return 0
