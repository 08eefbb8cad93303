"""``prepare``: the run's data source -> ``prepared/subjXX.h5`` (ROI-masked single-trial betas, train/test split).

The source writes it (:meth:`brain2image.sources.DataSource.prepare`; NSD: from an NSD tree).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ..config import RunConfig, SourceConfig, config_to_dict
from ..errors import InvalidArgumentError, MissingFileError
from .base import CommandOutput, Stage, StageContext
from .options import Option
from .registry import register_stage

__all__ = ["PrepareStage"]

@register_stage
class PrepareStage(Stage):
    """Write a subject's single-trial betas, masked to ROIs and split into train and test, from the run's source."""

    name = "prepare"
    help = "single-trial betas of a subject, masked to ROIs and split train/test (NSD, BIDS, precomputed betas)"
    description = ("Read the subject's data from its source and write prepared/subjXX.h5 with ROI-masked "
                   "single-trial betas: train = single trials, test = test images averaged over repetitions. "
                   "NSD (--nsd-root): its betas, ROIs and design (test = the shared images). BIDS (--source bids "
                   "--root RAW --task TASK --space SPACE --roi NAME=MASK ...): fMRIPrep outputs, single-trial betas "
                   "estimated with a GLM (LSS by default; test = images shown 2 or more times). Precomputed betas "
                   "(--source betas --betas FILE --trials TSV). --check only checks every file a run needs, one "
                   "line per problem.")
    sections = ("prepare",)
    run_keys = ("nsd_root", "subject")
    source_keys = tuple(f.name for f in dataclasses.fields(SourceConfig))
    path_options = (Option("out", "the prepared file to write, prepared/subjXX.h5 (required unless --check)",
                           type=Path, role="output"),)
    extra_options = (
        Option("check", "only check the files the run needs (exists, opens, shape); exit 1 on problems",
               default=False, action="store_true"),
        Option("trials_per_session", "trials per session (default: the source's, 750 in NSD; smaller in test trees)",
               type=int, hidden=True),
    )
    option_overrides = {"nsd_root": {"help": "NSD root (default: $NSD_ROOT)"}, "subject": {"required": True}}

    def output_settings(self, config: RunConfig) -> dict[str, Any]:
        """The ``[prepare]`` settings, and the ``[source]`` keys given beside ``kind`` and ``root``."""
        values = super().output_settings(config)
        values.update({f"source.{key}": value for key, value in config_to_dict(config.source).items()
                       if key in config.source.given_keys()})
        return values

    def outputs(self, ctx: StageContext) -> dict[str, Any]:
        """``prepared``: the prepared file."""
        return {"prepared": ctx.path("out", lambda: ctx.layout.prepared)}

    def run(self, ctx: StageContext, shard: tuple[int, int] | None = None) -> Path:
        """Write the prepared file; returns its path."""
        self.refuse_shard(shard)
        out = self.outputs(ctx)["prepared"]
        if out is None:
            raise InvalidArgumentError("prepare: --out is required unless --check; expected the path of "
                                       "the prepared file (prepared/subjXX.h5)")
        source = _source_with_subject(ctx)
        return source.prepare(str(ctx.config.subject), ctx.config.prepare, out, progress=ctx.progress,
                              trials_per_session=ctx.extra.get("trials_per_session"))

    def command(self, ctx: StageContext) -> CommandOutput:
        """``--check``: the table of needed files on stdout, one line per problem on stderr (exit 1 then).

        Without ``--check``: prepare and print the path.
        """
        if not ctx.extra.get("check"):
            return super().command(ctx)
        report = _source_with_subject(ctx, check=True).check(str(ctx.config.subject), ctx.config.prepare,
                                    trials_per_session=ctx.extra.get("trials_per_session"))
        return CommandOutput([report.format_table()], code=0 if report.ok else 1,
                             errors=report.problem_lines())


def _source_with_subject(ctx: StageContext, check: bool = False) -> Any:
    """The run's data source, once its root and the subject are found (a missing subject is named first).

    With ``check`` (``--check``), a root that is not the study's is left to the check's table (every
    file missing); a subject absent from a study that is there is still an error.
    """
    source = ctx.source()
    try:
        source.require_root()
    except MissingFileError:
        if check:
            return source
        raise
    source.require_subject(str(ctx.config.subject), ctx.config.prepare)
    return source
