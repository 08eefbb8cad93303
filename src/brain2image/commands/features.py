"""``brain2image features``: z and c feature stores of the images of a prepared file."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

__all__ = ["register", "run"]

logger = logging.getLogger(__name__)


def register(subparsers) -> None:
    """Add the ``features`` subcommand."""
    p = subparsers.add_parser(
        "features", help="compute z (VAE latent) and c (caption embedding) feature stores",
        description="Compute the z and c features of every image in a prepared file (or of explicit ids) "
                    "into <out>/<dataset>_<model>_{z,c}.h5. Resumable; no diffusion sampling.")
    p.add_argument("--nsd-root", required=True, help="NSD root (holds nsddata/, nsddata_stimuli/)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prepared", help="prepared_subjXX.h5 (its /train/ids and /test/ids are used)")
    src.add_argument("--ids", type=int, nargs="+", metavar="ID", help="explicit 0-based 73k ids")
    p.add_argument("--dataset", help="dataset name in the store file names "
                                     "(default: the prepared file's stem without 'prepared_', else 'ids')")
    p.add_argument("--model", default="bundled", help="'bundled', a diffusers hub id in the local cache, "
                                                      "or a local diffusers folder")
    p.add_argument("--out", required=True, help="features folder")
    p.add_argument("--feature", nargs="+", choices=["z", "c"], default=["z", "c"])
    p.add_argument("--resolution", type=int, help="z resolution in pixels (default: 5/8 of the model's native size)")
    p.add_argument("--latent-sample", choices=["mean", "sample"], default="mean")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shard", help="compute only part i of n (1-based), e.g. 1/4")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default=None, help="float32 (CPU default), float16 (CUDA default), bfloat16")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``brain2image features``."""
    from .._io import atomic_write_text
    from ..config import FeatureConfig, config_to_dict
    from ..formats.feature_store import parse_shard
    from ..ldm.features import extract_features, feature_store_path, read_prepared_ids
    from ..ldm.loading import load_ldm

    if args.prepared:
        ids = read_prepared_ids(args.prepared)
        dataset = args.dataset or Path(args.prepared).stem.removeprefix("prepared_")
    else:
        ids = np.unique(np.asarray(args.ids, dtype=np.int64))
        dataset = args.dataset or "ids"
    config = FeatureConfig(z_resolution=args.resolution, latent_sample=args.latent_sample,
                           batch_size=args.batch_size, seed=args.seed)
    shard = parse_shard(args.shard) if args.shard else None
    model = load_ldm(args.model, device=args.device, dtype=args.dtype)
    out = Path(args.out)
    written = []
    for feature in args.feature:
        path = feature_store_path(out, dataset, model.name, feature)
        written.append(extract_features(args.nsd_root, ids, model, feature, path, config,
                                        progress=not args.no_progress, shard=shard))
    record = {"model": model.name, "dataset": dataset, "n_images": int(len(ids)), "config": config_to_dict(config),
              "z_resolution": int(config.z_resolution or model.z_resolution), "stores": [p.name for p in written]}
    # Each store also carries its config in its attributes; config.json records the last run.
    atomic_write_text(out / "config.json", json.dumps(record, indent=2, sort_keys=True))
    for path in written:
        logger.info("wrote %s", path)
    return 0
