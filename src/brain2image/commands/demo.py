"""``brain2image demo``: the embedded default end to end (what ``make demo`` runs)."""

from __future__ import annotations

import argparse

from ._common import add_command_parser, show_progress

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``demo`` subcommand."""
    parser = add_command_parser(
        subparsers, "demo", help="simulate a subject and run the whole method on it (a few minutes on a CPU)",
        description="Simulate a subject viewing procedural scenes (written as an NSD tree), then "
        "prepare → features → fit → reconstruct → evaluate → encode → report with the bundled model.")
    parser.add_argument("--out", required=True, help="run folder (created; reruns resume)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the simulation and the samples")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads of torch and BLAS (default: torch's count here)")
    parser.add_argument("--n-samples", type=int, default=5, help="samples per test image")
    parser.add_argument("--source", choices=("nsd", "bids"), default="nsd",
                        help="the simulated study's format: an NSD tree, or a BIDS dataset with fMRIPrep-style "
                        "derivatives whose single-trial betas prepare estimates (LSS)")
    parser.add_argument("--redo", action="append", default=None, metavar="STAGE",
                        help="recompute STAGE and every stage after it, removing their old outputs first (a "
                        "resume with settings other than those a finished stage recorded is refused without it); "
                        "repeat it for several stages")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import json

    from ..embedded.demo import run_demo
    from ..formats.run_layout import RunLayout
    from ..methods import method_names

    report = run_demo(args.out, seed=args.seed, progress=show_progress(args), threads=args.threads,
                      n_samples=args.n_samples, redo=args.redo or (), source=args.source)
    metrics = json.loads(RunLayout.of(args.out).file("metrics").read_text())
    keys = ("pixcorr", "ssim", "id_pixel", "id_semantic", "takagi_pixel", "takagi_semantic")
    print(f"{'method':<10}" + "".join(f"{k:>16}" for k in keys))
    for method in method_names():
        if method in metrics:
            print(f"{method:<10}" + "".join(f"{metrics[method].get(k, float('nan')):>16.3f}" for k in keys))
    print(f"total time: {metrics['timings_s']['total']:.0f} s")
    print(report.resolve())
    return 0
