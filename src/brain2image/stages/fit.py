"""``fit``: ridge decoders from ROI voxels to features (in a run: each target of ``[decoder] targets``)."""

from __future__ import annotations

import argparse
import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from ..config import RunConfig
from ..errors import InvalidArgumentError
from ..interrupts import say_skipped
from .base import CommandOutput, Stage, StageContext
from .options import Option, target_part_option
from .registry import register_stage
from .tasks import Split, TaskSpec

__all__ = ["FitStage", "DecoderJob", "FitPart", "decoder_targets"]

logger = logging.getLogger(__name__)


def decoder_targets(config: RunConfig) -> list[tuple[str, str, bool]]:
    """The decoders of a run folder: ``(target, ROI, fitted in parts on a cluster)`` of each, in order.

    One per entry of ``[decoder] targets`` (registered targets, :mod:`brain2image.targets`); a
    target with ``fit_in_parts`` (c) is fitted in parts of its columns on a cluster.
    """
    from ..targets import get_target

    return [(name, roi, get_target(name).fit_in_parts) for name, roi in config.decoder.targets.items()]


@dataclass(frozen=True)
class FitPart:
    """One task of ``fit``: the decoder of ``target``, or only part ``(i, n)`` of its targets' columns."""

    target: str
    part: tuple[int, int] | None = None

    def __str__(self) -> str:
        return self.target + (f" {self.part[0]}/{self.part[1]}" if self.part is not None else "")


class DecoderJob(NamedTuple):
    """One decoder to fit: ``target`` from ``roi``, features from ``store``, written to ``out``."""

    target: str
    roi: str
    store: Path
    out: Path


def _holds_targets(store: Path, part: tuple[int, int], chunk: int) -> bool:
    """Whether part ``(i, n)`` of the targets of the feature store ``store`` holds any (blocks of ``chunk``)."""
    import numpy as np

    from ..decoding.parts import target_part_columns
    from ..formats.feature_store import FeatureStore

    return target_part_columns(int(np.prod(FeatureStore.open(store).feature_shape)), part, chunk) is not None


@register_stage
class FitStage(Stage):
    """Ridge decoders with per-target alpha by image-grouped cross-validation; test predictions."""

    name = "fit"
    help = "fit a ridge decoder from ROI voxels to a feature store"
    description = ("Fit a ridge decoder (per-target alpha by image-grouped K-fold CV) from the single-trial "
                   "training betas of one ROI of a prepared file to the features of a feature store; predict "
                   "the test images and write <out>/subjXX_<target>_<roi>.h5. In a run: every target of "
                   "[decoder] targets from its ROI.")
    sections = ("decoder",)
    run_keys = ("device",)
    memory_options = ("decoder.target_chunk",)
    path_options = (
        Option("prepared", "prepared/subjXX.h5 (brain2image prepare)", type=Path, role="input", required=True),
        Option("features", "feature store .h5 of the target (brain2image features)", type=Path, role="input",
               required=True),
        Option("out", "folder of the decoder file", type=Path, role="output", required=True),
    )
    extra_options = (
        Option("target", "feature name, used in the decoder file name (z, c, ...)", required=True),
        Option("roi", "ROI key of the prepared file (default: the target's default ROI, e.g. early for z and "
                      "ventral for c; required for a feature that is not a registered target)"),
        target_part_option,
    )
    #: The command names one target and its ROI (--target, --roi); [decoder] targets is a run's.
    option_overrides = {"targets": {"hidden": True}}

    def enabled(self, config: RunConfig) -> bool:
        """Unless a stage that writes the decoders another way is enabled (``transfer`` with a ``[transfer]`` table)."""
        from .registry import replaced_by

        return replaced_by(self.name, config) is None

    def is_done(self, ctx: StageContext) -> bool:
        """Every decoder file is there; a transfer run's decoders in their place are refused."""
        from .transfer import refuse_decoders_made_otherwise

        if ctx.in_run_folder:
            refuse_decoders_made_otherwise([job.out for job in self.jobs(ctx)], by_transfer=False, redo=self.name)
        return super().is_done(ctx)

    def check(self, config: RunConfig) -> None:
        """The device, and ``[decoder] backend`` on it (``torch_cuda`` needs a CUDA device)."""
        from ..ridge.backend import resolve_backend

        super().check(config)
        resolve_backend(config.decoder.backend, config.device, option="[decoder] backend")

    def _command_job(self, ctx: StageContext) -> DecoderJob:
        from ..formats.decoder_file import DecoderFile
        from ..formats.prepared import PreparedData
        from ..targets import get_target, target_names

        target, roi = ctx.extra["target"], ctx.extra.get("roi")
        if roi is None:
            if target not in target_names():
                raise InvalidArgumentError(f"fit: --roi is required for target {target!r}; expected an ROI key of "
                                           f"the prepared file (registered targets {list(target_names())} have a "
                                           "default ROI)")
            roi = get_target(target).default_roi
        if target in target_names():  # the decoder file records the ROI this target was fitted from
            decoder = ctx.config.decoder
            ctx.config.decoder = dataclasses.replace(decoder, targets={**decoder.targets, target: roi})
        paths = ctx.paths or {}
        subject = PreparedData(paths["prepared"]).subject
        return DecoderJob(target, roi, Path(paths["features"]), Path(paths["out"]) /
                          DecoderFile.filename(subject, target, roi))

    def context_from_args(self, args: argparse.Namespace, *, progress: bool = True) -> StageContext:
        """As a command, ``--target-part i/n`` makes the context's part that part of ``--target``."""
        ctx = super().context_from_args(args, progress=progress)
        if ctx.extra.get("target_part") is not None:
            i, n = ctx.extra["target_part"]
            ctx.part = FitPart(str(ctx.extra["target"]), (int(i), int(n)))
        return ctx

    def jobs(self, ctx: StageContext) -> list[DecoderJob]:
        """The decoders to fit: those of :func:`decoder_targets` in a run folder, ``--target`` in a command.

        A context whose part is a :class:`FitPart` (one task of a cluster run) keeps only its target.
        """
        if not ctx.in_run_folder:
            return [self._command_job(ctx)]
        layout, part = ctx.layout, ctx.part
        return [DecoderJob(t, roi, layout.feature_store(t), layout.decoder(t, roi))
                for t, roi, _ in decoder_targets(ctx.config) if not isinstance(part, FitPart) or part.target == t]

    @staticmethod
    def _target_part(ctx: StageContext) -> tuple[int, int] | None:
        """``(i, n)`` of the context's :class:`FitPart`; ``None``: every target."""
        return ctx.part.part if isinstance(ctx.part, FitPart) else None

    def inputs(self, ctx: StageContext) -> dict[str, Any]:
        """``prepared`` and the feature store of each target."""
        prepared = ctx.path("prepared", lambda: ctx.layout.prepared)
        return {"prepared": prepared, **{f"features_{job.target}": job.store for job in self.jobs(ctx)}}

    def outputs(self, ctx: StageContext) -> dict[str, Any]:
        """The decoder file of each target."""
        return {f"decoder_{job.target}": job.out for job in self.jobs(ctx)}

    def run(self, ctx: StageContext, shard: tuple[int, int] | None = None) -> list[Path]:
        """Fit each decoder not on disk yet (a command refits); returns the decoder files.

        A context whose part is a :class:`FitPart` with ``part`` ``(i, n)`` (``fit --target-part``, a
        cluster task) fits only that part of the decoder's targets into its part file
        (:func:`~brain2image.decoding.parts.decoder_part_path`), kept when already there (in a
        run folder, a part that holds no block of targets fits nothing); :meth:`finish` joins them.
        """
        from ..decoding import fit_decoder_from_files
        from ..decoding.parts import decoder_part_path

        self.refuse_shard(shard)
        prepared, config = self.inputs(ctx)["prepared"], ctx.config.decoder
        part = self._target_part(ctx)
        written = []
        for job in self.jobs(ctx):
            out = job.out if part is None else decoder_part_path(job.out, part)
            if ctx.in_run_folder and part is not None and not _holds_targets(job.store, part, config.target_chunk):
                logger.info("fit %s: part %d/%d holds no block of targets; nothing to fit", job.target, *part)
                continue
            if ctx.in_run_folder and part is None and job.out.is_file():
                say_skipped(ctx.progress, f"fit {job.target}: done, skipped")
            elif not (ctx.in_run_folder and (job.out.is_file() or out.is_file())):
                with ctx.timed(f"fit_{job.target}"):
                    fit_decoder_from_files(prepared, job.store, job.roi, job.target, out, config,
                                           device=ctx.config.device, progress=ctx.progress, part=part)
            written.append(out)
        return written

    def tasks(self, ctx: StageContext, split: Split) -> list[list[TaskSpec]]:
        """One task per decoder, the decoders fitted in parts in ``split.target_parts`` parts (when more than 1)."""
        n = split.target_parts
        specs = []
        for target, _, parted in decoder_targets(ctx.config):
            if parted and n > 1:
                specs += [TaskSpec(part=FitPart(target, (i, n))) for i in range(1, n + 1)]
            else:
                specs.append(TaskSpec(part=FitPart(target)))
        return [specs]

    def finish(self, ctx: StageContext, tasks: Sequence[TaskSpec]) -> None:
        """Join the part files of each decoder the tasks fitted in parts (a decoder already there is kept).

        Raises
        ------
        MissingFileError, DataFormatError
            A missing part, or parts that disagree (:func:`~brain2image.decoding.parts.merge_decoder_parts`).
        """
        from ..decoding.parts import merge_decoder_parts

        counts = {task.part.target: task.part.part[1] for task in tasks
                  if isinstance(task.part, FitPart) and task.part.part is not None}
        for job in self.jobs(ctx):
            if job.target in counts and not job.out.is_file():
                merge_decoder_parts(job.out, counts[job.target])

    def command(self, ctx: StageContext) -> CommandOutput:
        """Fit, then print each decoder file with its mean test r and median alpha."""
        from ..formats.decoder_file import DecoderFile

        lines = []
        what = "decoder" if self._target_part(ctx) is None else "decoder part"
        for path in self.run(ctx, ctx.extra.get("shard")):
            summary = DecoderFile.read(path).summary()
            lines.append(f"{what} written to {path} (mean test r = {summary['mean_r']:.3f}, "
                         f"median alpha = {summary['median_alpha']:g})")
        return CommandOutput(lines)
