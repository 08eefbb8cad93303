"""``brain2image train-bundled``: (re)train the small latent diffusion model that ships inside the package."""

from __future__ import annotations

import argparse
import dataclasses

from ._common import add_command_parser

__all__ = ["register"]

#: :class:`~brain2image.embedded.training_config.BundledTrainingConfig` fields that are options of the command.
OPTION_KEYS = ("vae_minutes", "unet_minutes", "n_train_scenes", "threads", "seed")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train-bundled`` subcommand."""
    from ..embedded.training_config import BundledTrainingConfig
    from ..stages.options import AccumulateList, section_options

    parser = add_command_parser(
        subparsers, "train-bundled", help="train the bundled small LDM on procedural scenes (resumable)",
        description="Train (or resume training of) the bundled VAE and U-Net on procedural scenes, "
        "then export them into the package. Rerun with the same --work folder to resume.")
    parser.add_argument("--work", required=True, help="folder for checkpoints and caches")
    parser.add_argument("--stages", nargs="+", action=AccumulateList, default=["vae", "cache", "unet"],
                        choices=["vae", "cache", "unet"], help="training stages to run, in order")
    parser.add_argument("--export-to", default=None,
                        help="folder to export the diffusers model to (default: inside the package)")
    for option in section_options(BundledTrainingConfig, "bundled_training", OPTION_KEYS):
        option.add_to(parser)
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from ..embedded.bundled_training import train_bundled_model
    from ..embedded.training_config import BundledTrainingConfig

    config = dataclasses.replace(BundledTrainingConfig(), **{key: getattr(args, key) for key in OPTION_KEYS})
    out = train_bundled_model(args.work, config, stages=tuple(args.stages), export_to=args.export_to)
    print(f"bundled model written to {out}")
    return 0
