"""``brain2image simulate``: write the embedded default data set (a simulated NSD tree)."""

from __future__ import annotations

import argparse
import logging

from ._common import add_command_parser, show_progress

__all__ = ["register", "run"]

logger = logging.getLogger(__name__)


def _volume_shape(text: str) -> tuple[int, int, int]:
    try:
        shape = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        shape = ()
    if len(shape) != 3:
        raise argparse.ArgumentTypeError(f"expected XxYxZ (e.g. 24x30x20), got {text!r}")
    return shape


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``simulate`` subcommand."""
    parser = add_command_parser(
        subparsers, "simulate", help="simulate a subject viewing procedural scenes, written as an NSD tree",
        description="Simulate a subject viewing procedural scenes and write an NSD tree "
        "(<out>/nsd) plus the ground truth (<out>/simulation_truth.h5).")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--n-images", type=int, default=1250, help="size of the simulated 73k image space")
    parser.add_argument("--n-shared", type=int, default=50, help="shared test images, shown 3 times each")
    parser.add_argument("--sessions", type=int, default=4, help="sessions of 750 trials")
    parser.add_argument("--ncsnr", type=float, default=0.4, help="median single-trial ncsnr of the ROI voxels")
    parser.add_argument("--volume-shape", type=_volume_shape, default="24x30x20", help="functional volume XxYxZ")
    parser.add_argument("--image-size", type=int, default=64, help="stimulus side in pixels")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--nifti-betas", action="store_true", help="also write betas_sessionNN.nii.gz")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``brain2image simulate``."""
    from ..embedded.simulate.study import simulate_study

    study = simulate_study(
        args.out, n_images=args.n_images, n_shared=args.n_shared, n_sessions=args.sessions,
        volume_shape=args.volume_shape, image_size=args.image_size, ncsnr=args.ncsnr,
        nifti_betas=args.nifti_betas, seed=args.seed, progress=show_progress(args))
    logger.info("NSD tree: %s; ground truth: %s", study.nsd_root, study.truth_path)
    print(f"NSD tree: {study.nsd_root}\nground truth: {study.truth_path}")
    return 0
