"""``brain2image encode``: encoding models from LDM components to visual cortex, with maps."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

__all__ = ["register", "run"]

logger = logging.getLogger(__name__)


def _feature_arg(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"--features {text!r}: expected NAME=STORE.h5, e.g. z=features/z.h5")
    return name, path


def register(subparsers) -> None:
    """Add the ``encode`` subcommand."""
    from ..config import EncodingConfig, ZcConfig

    enc, zc = EncodingConfig(), ZcConfig()
    p = subparsers.add_parser("encode", help="encoding models: which LDM component explains which voxels",
                              description="Fit voxelwise ridge encoding models from feature stores (z, c, z_c, "
                              "U-Net) to an ROI of a prepared file; write results.h5, summary.json and maps.")
    p.add_argument("--prepared", required=True, type=Path, help="prepared_subjXX.h5")
    p.add_argument("--features", action="append", type=_feature_arg, required=True, metavar="NAME=STORE",
                   help="a feature store (repeat); z and c are needed with --model")
    p.add_argument("--out", required=True, type=Path, help="output folder (results in OUT/encoding/)")
    p.add_argument("--roi", default=enc.roi, help=f"ROI key to model (default {enc.roi})")
    p.add_argument("--summary-rois", nargs="*", default=enc.summary_rois, help="ROI keys summarised")
    p.add_argument("--alphas", nargs="+", type=float, default=None, help="ridge grid")
    p.add_argument("--folds", type=int, default=enc.n_folds)
    p.add_argument("--banded-iter", type=int, default=enc.banded_n_iter)
    p.add_argument("--pair", nargs=2, action="append", metavar=("A", "B"), default=None,
                   help="feature spaces to partition (repeat); default z c and consecutive zc levels")
    p.add_argument("--no-maps", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    g = p.add_argument_group("z_c / U-Net feature extraction (with --model)")
    g.add_argument("--model", default=None, help="'bundled', a diffusers folder or a cached hub id")
    g.add_argument("--device", default="cpu")
    g.add_argument("--zc-strengths", nargs="+", type=float, default=zc.strengths)
    g.add_argument("--unet-layers", nargs="*", default=zc.unet_layers)
    g.add_argument("--unet-steps", nargs="*", type=float, default=zc.unet_steps,
                   help="fractions of each run's steps (0 first, 1 last)")
    g.add_argument("--steps", type=int, default=zc.num_inference_steps)
    g.add_argument("--guidance", type=float, default=zc.guidance_scale)
    g.add_argument("--pool-size", type=int, default=zc.pool_size)
    g.add_argument("--max-dim", type=int, default=None)
    g.add_argument("--batch-size", type=int, default=zc.batch_size)
    g.add_argument("--progress", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    """Run ``brain2image encode``."""
    from ..encoding.analysis import EncodingConfig, run_encoding_analysis
    from ..encoding.unet_features import ZcConfig, extract_zc_stores
    from ..errors import DataFormatError

    stores = dict(args.features)
    if args.model is not None:
        if "z" not in stores or "c" not in stores:
            raise DataFormatError("--model needs --features z=STORE and --features c=STORE (their ids and "
                                  "values seed the z_c runs)")
        from ..ldm.loading import load_ldm

        model = load_ldm(args.model, device=args.device)
        zc_config = ZcConfig(strengths=args.zc_strengths, num_inference_steps=args.steps,
                             guidance_scale=args.guidance, unet_layers=args.unet_layers, unet_steps=args.unet_steps,
                             pool_size=args.pool_size, max_dim=args.max_dim, batch_size=args.batch_size,
                             seed=args.seed)
        extracted = extract_zc_stores(model.unet, model.vae, model.scheduler, model.empty_prompt_embedding(),
                                      stores["z"], stores["c"], args.out / "features_zc", zc_config,
                                      model_name=model.name, progress=args.progress)
        stores.update({name: str(path) for name, path in extracted.items()})
    config = EncodingConfig(roi=args.roi, summary_rois=list(args.summary_rois), n_folds=args.folds,
                            banded_n_iter=args.banded_iter, seed=args.seed, maps=not args.no_maps,
                            partition_pairs=[list(p) for p in args.pair] if args.pair else None)
    if args.alphas:
        config.alphas = list(args.alphas)
    results = run_encoding_analysis(args.prepared, stores, args.out, config=config)
    for name, space in results.spaces.items():
        logger.info("%s: mean r %.3f", name, float(space["r"].mean()))
    print(f"encoding results: {args.out / 'encoding'}")
    return 0
