"""``brain2image train-bundled``: (re)train the small latent diffusion model that ships inside the package."""

from __future__ import annotations

import argparse
import dataclasses

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train-bundled`` subcommand."""
    from ..config import BundledTrainingConfig

    defaults = BundledTrainingConfig()
    parser = subparsers.add_parser(
        "train-bundled",
        help="train the bundled small LDM on procedural scenes (resumable)",
        description="Train (or resume training of) the bundled VAE and U-Net on procedural scenes, "
        "then export them into the package. Rerun with the same --work folder to resume.",
    )
    parser.add_argument("--work", required=True, help="folder for checkpoints and caches")
    parser.add_argument("--stages", nargs="+", default=["vae", "cache", "unet"],
                        choices=["vae", "cache", "unet"], help="stages to run, in order")
    parser.add_argument("--vae-minutes", type=float, default=defaults.vae_minutes)
    parser.add_argument("--unet-minutes", type=float, default=defaults.unet_minutes)
    parser.add_argument("--n-train-scenes", type=int, default=defaults.n_train_scenes)
    parser.add_argument("--threads", type=int, default=defaults.threads)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--export-to", default=None,
                        help="folder to export the diffusers model to (default: inside the package)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from ..embedded.bundled_training import BundledTrainingConfig, train_bundled_model

    config = dataclasses.replace(
        BundledTrainingConfig(), vae_minutes=args.vae_minutes, unet_minutes=args.unet_minutes,
        n_train_scenes=args.n_train_scenes, threads=args.threads, seed=args.seed,
    )
    out = train_bundled_model(args.work, config, stages=tuple(args.stages), export_to=args.export_to)
    print(f"bundled model written to {out}")
    return 0
