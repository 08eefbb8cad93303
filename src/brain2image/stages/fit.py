"""``fit``: ridge decoders from ROI voxels to features (z <- early, c <- ventral in a run)."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, NamedTuple

from ..config import RunConfig
from ..errors import InvalidArgumentError
from .base import CommandOutput, Stage, StageContext
from .options import Option, target_part_option
from .registry import register_stage

__all__ = ["FitStage", "DecoderJob"]

logger = logging.getLogger(__name__)


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
                   "the test images and write <out>/subjXX_<target>_<roi>.h5. In a run: z from --z-roi and "
                   "c from --c-roi.")
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
        Option("roi", "ROI key of the prepared file (default: --z-roi for z, --c-roi for c; required for other "
                      "targets)"),
        target_part_option,
    )

    def check(self, config: RunConfig) -> None:
        """The device, and ``[decoder] backend`` on it (``torch_cuda`` needs a CUDA device)."""
        from ..ridge.backend import resolve_backend

        super().check(config)
        resolve_backend(config.decoder.backend, config.device, option="[decoder] backend")

    def _command_job(self, ctx: StageContext) -> DecoderJob:
        from ..formats.decoder_file import DecoderFile
        from ..formats.prepared import PreparedData

        target, roi = ctx.extra["target"], ctx.extra.get("roi")
        decoder = ctx.config.decoder
        if roi is None:
            if target not in ("z", "c"):
                raise InvalidArgumentError(f"fit: --roi is required for target {target!r}; expected an ROI key of "
                                           "the prepared file (z and c default to --z-roi and --c-roi)")
            roi = decoder.z_roi if target == "z" else decoder.c_roi
        elif target in ("z", "c"):
            ctx.config.decoder = dataclasses.replace(decoder, **{f"{target}_roi": roi})
        paths = ctx.paths or {}
        subject = PreparedData(paths["prepared"]).subject
        return DecoderJob(target, roi, Path(paths["features"]), Path(paths["out"]) /
                          DecoderFile.filename(subject, target, roi))

    def jobs(self, ctx: StageContext) -> list[DecoderJob]:
        """The decoders to fit: z and c in a run folder, ``--target`` in a command.

        ``ctx.extra["targets"]`` (a cluster runner's one task per target) keeps only those targets.
        """
        if not ctx.in_run_folder:
            return [self._command_job(ctx)]
        decoder, layout = ctx.config.decoder, ctx.layout
        wanted = ctx.extra.get("targets") or ("z", "c")
        return [DecoderJob(t, roi, layout.feature_store(t), layout.decoder(t, roi))
                for t, roi in (("z", decoder.z_roi), ("c", decoder.c_roi)) if t in wanted]

    def inputs(self, ctx: StageContext) -> dict[str, Any]:
        """``prepared`` and the feature store of each target."""
        prepared = ctx.path("prepared", lambda: ctx.layout.prepared)
        return {"prepared": prepared, **{f"features_{job.target}": job.store for job in self.jobs(ctx)}}

    def outputs(self, ctx: StageContext) -> dict[str, Any]:
        """The decoder file of each target."""
        return {f"decoder_{job.target}": job.out for job in self.jobs(ctx)}

    def run(self, ctx: StageContext, shard: tuple[int, int] | None = None) -> list[Path]:
        """Fit each decoder not on disk yet (a command refits); returns the decoder files.

        ``ctx.extra["target_part"]`` ``(i, n)`` (a cluster runner's task of one part of the
        targets) fits only that part of each decoder into its part file
        (:func:`~brain2image.decoding.parts.decoder_part_path`), kept when already there (in a
        run folder, a part that holds no block of targets fits nothing); :meth:`merge_parts`
        joins them.
        """
        from ..decoding import fit_decoder_from_files
        from ..decoding.parts import decoder_part_path

        self.refuse_shard(shard)
        prepared, config = self.inputs(ctx)["prepared"], ctx.config.decoder
        part = ctx.extra.get("target_part")
        written = []
        for job in self.jobs(ctx):
            out = job.out if part is None else decoder_part_path(job.out, part)
            if ctx.in_run_folder and part is not None and not _holds_targets(job.store, part, config.target_chunk):
                logger.info("fit %s: part %d/%d holds no block of targets; nothing to fit", job.target, *part)
                continue
            if not (ctx.in_run_folder and (job.out.is_file() or out.is_file())):
                with ctx.timed(f"fit_{job.target}"):
                    fit_decoder_from_files(prepared, job.store, job.roi, job.target, out, config,
                                           device=ctx.config.device, progress=ctx.progress, part=part)
            written.append(out)
        return written

    def merge_parts(self, ctx: StageContext, n_parts: int) -> list[Path]:
        """Join the ``n_parts`` part files of each decoder of ``ctx`` not on disk yet; returns the decoder files.

        Raises
        ------
        MissingFileError, DataFormatError
            A missing part, or parts that disagree (:func:`~brain2image.decoding.parts.merge_decoder_parts`).
        """
        from ..decoding.parts import merge_decoder_parts

        written = []
        for job in self.jobs(ctx):
            if not job.out.is_file():
                merge_decoder_parts(job.out, n_parts)
            written.append(job.out)
        return written

    def command(self, ctx: StageContext) -> CommandOutput:
        """Fit, then print each decoder file with its mean test r and median alpha."""
        from ..formats.decoder_file import DecoderFile

        lines = []
        what = "decoder" if ctx.extra.get("target_part") is None else "decoder part"
        for path in self.run(ctx, ctx.extra.get("shard")):
            summary = DecoderFile.read(path).summary()
            lines.append(f"{what} written to {path} (mean test r = {summary['mean_r']:.3f}, "
                         f"median alpha = {summary['median_alpha']:g})")
        return CommandOutput(lines)
