"""``brain2image demo``: the embedded default end to end (what ``make demo`` runs)."""

from __future__ import annotations

import argparse

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``demo`` subcommand."""
    parser = subparsers.add_parser(
        "demo", help="simulate a subject and run the whole method on it (a few minutes on a CPU)",
        description="Simulate a subject viewing procedural scenes (written as an NSD tree), then "
        "prepare → features → fit → reconstruct → evaluate → encode → report with the bundled model.")
    parser.add_argument("--out", required=True, help="run folder (created; reruns resume)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the simulation and the samples")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all)")
    parser.add_argument("--n-samples", type=int, default=5, help="samples per test image")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from ..embedded.demo import run_demo
    from ..pipeline import RUN_FILES

    report = run_demo(args.out, seed=args.seed, progress=not args.no_progress, threads=args.threads,
                      n_samples=args.n_samples)
    metrics = json.loads((Path(args.out) / RUN_FILES["metrics"]).read_text())
    keys = ("pixcorr", "ssim", "id_pixel", "id_semantic", "takagi_pixel", "takagi_semantic")
    print(f"{'method':<10}" + "".join(f"{k:>16}" for k in keys))
    for method in ("z_only", "c_only", "z_plus_c", "oracle"):
        if method in metrics:
            print(f"{method:<10}" + "".join(f"{metrics[method].get(k, float('nan')):>16.3f}" for k in keys))
    print(f"total time: {metrics['timings_s']['total']:.0f} s")
    print(report.resolve())
    return 0
