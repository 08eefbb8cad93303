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
        "whose outputs exist are skipped. With subjects = [1, 2, 5, 7] (examples/nsd_subjects_1257_sd14.toml) "
        "each subject runs into <out_dir>/subjXX/, then <out_dir>/summary.json and report.html hold every "
        "subject's metrics with their mean and sd. With a [transfer] table the transfer stage replaces fit: the "
        "subject is decoded through other subjects' decoders (examples/nsd_subj01_1session_transfer.toml).")
    parser.add_argument("config", nargs="?", default=None, help="TOML run config (required)")
    parser.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                        help="run the stages as Ray tasks (pip install brain2image[ray]; docs/cluster.md): "
                        "without ADDRESS (or 'local') on a local Ray with this machine's CPUs, with 'auto' or "
                        "host:port on that running cluster; give it as --ray=ADDRESS or after CONFIG (a path "
                        "right after --ray with no CONFIG after it is the config)")
    parser.add_argument("--redo", action="append", default=None, metavar="STAGE",
                        help="recompute STAGE and every stage after it, removing their old outputs first (a "
                        "resume with settings other than those a finished stage recorded is refused without it); "
                        "repeat it for several stages")
    parser.add_argument("--shards", type=_positive, default=None, metavar="N",
                        help="with --ray: shards of the image ids of features and reconstruct per subject "
                        "(default: the cluster's GPUs with device = 'cuda', else its CPUs)")
    parser.add_argument("--target-parts", type=_positive, default=None, metavar="N",
                        help="with --ray: fit tasks of the c decoder, each a part of its targets in whole blocks "
                        "of [decoder] target_chunk (default: --shards)")
    parser.set_defaults(func=_run)


def _positive(text: str) -> int:
    """A count of at least 1 (``argparse`` type)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected an integer of at least 1")
    return value


def _run(args: argparse.Namespace) -> int:
    """Run the config's stages (for each of its ``subjects``, then the study summary); print the report's path."""
    from ..pipeline import load_run_config, run_pipeline

    _config_and_address(args)
    config = load_run_config(args.config)
    if args.ray is None and (args.shards is not None or args.target_parts is not None):
        from ..errors import InvalidArgumentError

        raise InvalidArgumentError("--shards and --target-parts split the tasks of --ray; expected --ray with them")
    from ..prechecks import check_before_run

    check_before_run(config, config_file=args.config)
    if args.ray is not None:
        from ..cluster.ray_runner import run_on_ray

        report = run_on_ray(config, args.ray, n_shards=args.shards, target_parts=args.target_parts,
                            progress=show_progress(args), redo=args.redo or ())
    else:
        report = run_pipeline(config, progress=show_progress(args), redo=args.redo or ())
    print(report.resolve())
    return 0


def _config_and_address(args: argparse.Namespace) -> None:
    """Settle ``args.config`` and ``args.ray``; with ``--ray``, say (first line on stdout) which address it parsed.

    ``run --ray CONFIG`` is CONFIG on a local Ray (argparse gave CONFIG to ``--ray``): the address is
    only read as ``--ray=ADDRESS`` or after the config.
    """
    if args.config is None and args.ray not in (None, "local"):
        args.config, args.ray = args.ray, "local"
    if args.config is None:
        from ..errors import InvalidArgumentError

        raise InvalidArgumentError("no run config given; expected brain2image run CONFIG.toml [--ray[=ADDRESS]]")
    if args.ray is not None:
        where = "a local Ray on this machine's CPUs" if args.ray == "local" else f"the Ray cluster at {args.ray!r}"
        print(f"--ray: running on {where}", flush=True)
