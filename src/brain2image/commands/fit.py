"""``brain2image fit``: fit one ridge decoder (voxels of an ROI -> z or c features)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``fit`` subcommand."""
    from ..config import DecoderConfig

    defaults = DecoderConfig()
    parser = subparsers.add_parser(
        "fit",
        help="fit a ridge decoder from ROI voxels to a feature store",
        description="Fit a ridge decoder (per-target alpha by image-grouped K-fold CV) from the "
        "single-trial training betas of one ROI of a prepared file to the features of a feature "
        "store; predict the test images and write decoders/subjXX_<target>_<roi>.h5 in --out.",
    )
    parser.add_argument("--prepared", required=True, help="prepared_subjXX.h5 (brain2image prepare)")
    parser.add_argument("--features", required=True, help="feature store .h5 (brain2image features)")
    parser.add_argument("--target", required=True,
                        help="feature name used in the output file name (z, c, ...)")
    parser.add_argument("--roi", default=None,
                        help=f"ROI key of the prepared file (default: {defaults.z_roi} for z, "
                        f"{defaults.c_roi} for c)")
    parser.add_argument("--out", required=True, help="output folder for the decoder file")
    parser.add_argument("--alphas", type=float, nargs="+", default=None,
                        help=f"regularisation grid after voxel standardisation "
                        f"(default: {defaults.alphas})")
    parser.add_argument("--cv-folds", type=int, default=defaults.cv_folds)
    parser.add_argument("--target-chunk", type=int, default=defaults.target_chunk,
                        help="targets solved at a time (bounds memory)")
    parser.add_argument("--backend", default="numpy", choices=["numpy", "torch", "torch_cuda"],
                        help="himalaya backend")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--progress", action="store_true", help="show progress bars")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from ..config import DecoderConfig
    from ..decoding import decoder_filename, fit_decoder_from_files, load_decoder

    config = DecoderConfig()
    changes = {"cv_folds": args.cv_folds, "target_chunk": args.target_chunk}
    if args.alphas is not None:
        changes["alphas"] = [float(a) for a in args.alphas]
    roi = args.roi
    if roi is None:
        if args.target not in ("z", "c"):
            raise SystemExit(f"brain2image fit: --roi is required for target {args.target!r}")
        roi = config.z_roi if args.target == "z" else config.c_roi
    if args.target == "z":
        changes["z_roi"] = roi
    elif args.target == "c":
        changes["c_roi"] = roi
    config = dataclasses.replace(config, **changes)

    import h5py

    from ..errors import MissingFileError

    if not Path(args.prepared).is_file():
        raise MissingFileError(f"prepared file not found: {args.prepared}")
    with h5py.File(args.prepared, "r") as f:
        subject = int(f.attrs.get("subject", 0))
    out = Path(args.out) / decoder_filename(subject, args.target, roi)
    fit_decoder_from_files(args.prepared, args.features, roi, args.target, out, config,
                           backend=args.backend, dtype=args.dtype, progress=args.progress)
    info = load_decoder(out).attrs
    print(f"decoder written to {out} (mean test r = {info['mean_test_corr']:.3f}, "
          f"median alpha = {info['median_alpha']:g}, fit {info['fit_seconds']:.1f} s)")
    return 0
