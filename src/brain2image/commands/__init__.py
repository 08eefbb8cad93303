"""CLI subcommands other than the stage commands, one module each; every module exposes ``register(subparsers)``.

The command of each stage is generated from the stage registry (:func:`._common.register_stage_command`).
"""
