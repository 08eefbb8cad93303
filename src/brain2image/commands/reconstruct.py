"""``brain2image reconstruct``: z only / c only / z + c images from decoded (or true) features."""

from __future__ import annotations

import argparse
import logging

import numpy as np

__all__ = ["register", "run"]

logger = logging.getLogger(__name__)


def register(subparsers) -> None:
    """Add the ``reconstruct`` subcommand."""
    from ..config import ReconstructionConfig

    d = ReconstructionConfig()
    p = subparsers.add_parser(
        "reconstruct", help="generate images from decoded z and c (z_only, c_only, z_plus_c, oracle)",
        description="Generate reconstructions with diffusers pipelines into <out>/<method>/<73kid>_<sample>.png "
                    "and <out>/index.csv. Inputs are decoder files (test/ids, test/pred) or feature stores. "
                    "Resumable.")
    p.add_argument("--model", default="bundled", help="'bundled', a hub id in the local cache, or a folder")
    p.add_argument("--z", help="decoded z: decoder file or feature store")
    p.add_argument("--c", help="decoded c: decoder file or feature store")
    p.add_argument("--z-true", help="true z feature store (for --methods oracle)")
    p.add_argument("--c-true", help="true c feature store (for --methods oracle)")
    p.add_argument("--ids", type=int, nargs="+", metavar="ID", help="only these test ids")
    p.add_argument("--out", required=True, help="reconstruction folder (the 'recon' folder)")
    p.add_argument("--methods", nargs="+", choices=["z_only", "c_only", "z_plus_c", "oracle"],
                   default=list(d.methods))
    p.add_argument("--n-samples", type=int, default=d.n_samples)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--steps", type=int, default=d.num_inference_steps)
    p.add_argument("--strength", type=float, default=d.strength)
    p.add_argument("--guidance", type=float, default=d.guidance_scale)
    p.add_argument("--eta", type=float, default=d.eta)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default=None, help="float32 (CPU default), float16 (CUDA default), bfloat16")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run)


def _aligned(path: str | None, ids: np.ndarray | None, what: str):
    """(ids, values) of a file, restricted to / reordered by ``ids`` when given."""
    from ..errors import DataFormatError
    from ..formats.predictions import read_predictions as load_predictions

    if path is None:
        return None, None
    file_ids, values = load_predictions(path)
    if ids is None:
        return file_ids, values
    order = np.argsort(file_ids)
    pos = np.searchsorted(file_ids[order], ids)
    ok = (pos < len(file_ids)) & (file_ids[order][np.minimum(pos, len(file_ids) - 1)] == ids)
    if not ok.all():
        raise DataFormatError(f"{path}: {what} has no rows for ids {ids[~ok][:5].tolist()}")
    return ids, values[order][pos]


def run(args: argparse.Namespace) -> int:
    """Run ``brain2image reconstruct``."""
    from ..config import ReconstructionConfig
    from ..errors import MissingFileError
    from ..ldm.loading import load_ldm
    from ..ldm.reconstruct import reconstruct

    methods = tuple(args.methods)
    needs = {"z": any(m in methods for m in ("z_only", "z_plus_c")),
             "c": any(m in methods for m in ("c_only", "z_plus_c")),
             "z_true": "oracle" in methods, "c_true": "oracle" in methods}
    paths = {"z": args.z, "c": args.c, "z_true": args.z_true, "c_true": args.c_true}
    missing = [k for k, need in needs.items() if need and not paths[k]]
    if missing:
        raise MissingFileError(f"methods {list(methods)} need "
                               + ", ".join("--" + k.replace("_", "-") for k in missing))
    ids = None if args.ids is None else np.asarray(args.ids, dtype=np.int64)
    if ids is None:
        first = next(k for k, need in needs.items() if need)
        ids, _ = _aligned(paths[first], None, first)
    arrays = {k: _aligned(paths[k], ids, k)[1] if needs[k] else None for k in paths}
    config = ReconstructionConfig(num_inference_steps=args.steps, strength=args.strength,
                                  guidance_scale=args.guidance, eta=args.eta, n_samples=args.n_samples,
                                  seed=args.seed, batch_size=args.batch_size, methods=methods)
    model = load_ldm(args.model, device=args.device, dtype=args.dtype)
    index = reconstruct(model, ids, z=arrays["z"], c=arrays["c"], methods=methods, config=config, out_dir=args.out,
                        progress=not args.no_progress, z_true=arrays["z_true"], c_true=arrays["c_true"])
    logger.info("wrote %s", index)
    return 0
