"""``brain2image evaluate``: reconstructions + NSD stimuli → metrics.json."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

__all__ = ["register", "run"]

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` subcommand."""
    parser = subparsers.add_parser(
        "evaluate", help="compute the metric table of reconstructions",
        description="Compute PixCorr, SSIM, two-way identification (MindEye and Takagi definitions) "
                    "and correlation distances of every method in a reconstruction folder.")
    parser.add_argument("--recon", required=True, type=Path, help="folder with index.csv")
    parser.add_argument("--nsd-root", required=True, type=Path,
                        help="NSD root holding nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5")
    parser.add_argument("--out", required=True, type=Path, help="metrics JSON to write")
    parser.add_argument("--metrics", choices=("embedded", "full"), default="embedded",
                        help="embedded: pixel + scene-evaluator spaces (simulated study); "
                             "full: AlexNet, Inception-v3, CLIP, EfficientNet-B1, SwAV (real images)")
    parser.add_argument("--weights-dir", type=Path, default=None,
                        help="folder with the feature networks' checkpoints (default: local caches)")
    parser.add_argument("--size", type=int, default=425,
                        help="PixCorr/SSIM comparison size (capped at the real images' size)")
    parser.add_argument("--device", default="cpu")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the stage; returns the exit code."""
    from ..evaluation.evaluate import evaluate_recon_dir

    result = evaluate_recon_dir(args.recon, args.nsd_root, args.out, args.metrics,
                                weights_dir=args.weights_dir, size=args.size, device=args.device)
    logger.info("wrote %s (%d methods)", args.out, len(result["methods"]))
    return 0
