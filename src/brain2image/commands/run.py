"""``brain2image run CONFIG.toml``: every stage of a real study, skipping work already done."""

from __future__ import annotations

import argparse

from ._common import add_command_parser, show_progress

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``run`` subcommand."""
    parser = add_command_parser(
        subparsers, "run", help="run all stages for a study described by a TOML config (resumable)",
        description="Run every registered stage in order (prepare → features → fit → reconstruct → evaluate → "
        "encode → report) as set in CONFIG (see examples/nsd_subj01_sd14.toml and docs/cli.md). Stages "
        "whose outputs exist are skipped.")
    parser.add_argument("config", help="TOML run config")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from ..pipeline import load_run_config, run_pipeline

    report = run_pipeline(load_run_config(args.config), progress=show_progress(args))
    print(report.resolve())
    return 0
