"""``evaluate``: reconstructions + NSD stimuli -> the metric table (``evaluation.json`` in a run)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from .base import Stage, StageContext
from .options import Option
from .registry import register_stage

__all__ = ["EvaluateStage"]

logger = logging.getLogger(__name__)


@register_stage
class EvaluateStage(Stage):
    """PixCorr, SSIM, both identifications and feature-space distances of every method."""

    name = "evaluate"
    help = "compute the metric table of reconstructions"
    description = ("Compute PixCorr, SSIM, two-way identification (MindEye and Takagi definitions) and "
                   "correlation distances of every method in a reconstruction folder.")
    sections = ("evaluation",)
    run_keys = ("nsd_root", "device")
    path_options = (
        Option("recon", "reconstruction folder with index.csv", type=Path, role="input", required=True),
        Option("out", "metrics JSON to write (evaluation.json in a run)", type=Path, role="output", required=True),
    )
    option_overrides = {"nsd_root": {"required": True, "help": "NSD root holding "
                                     "nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5"},
                        "device": {"help": "torch device of the feature networks"}}

    def inputs(self, ctx: StageContext) -> dict[str, Any]:
        """``recon``: the reconstruction folder."""
        return {"recon": ctx.path("recon", lambda: ctx.layout.file("recon"))}

    def outputs(self, ctx: StageContext) -> dict[str, Any]:
        """``evaluation``: the metrics JSON."""
        return {"evaluation": ctx.path("out", lambda: ctx.layout.file("evaluation"))}

    def is_done(self, ctx: StageContext) -> bool:
        """Never skipped (seconds): a run recomputes it from the images on disk."""
        return False

    def run(self, ctx: StageContext, shard: tuple[int, int] | None = None) -> dict:
        """Evaluate; returns what was written (``methods``, ``feature_spaces``, ...)."""
        from ..evaluation.evaluate import evaluate_recon_dir

        self.refuse_shard(shard)
        config, out = ctx.config.evaluation, self.outputs(ctx)["evaluation"]
        result = evaluate_recon_dir(self.inputs(ctx)["recon"], ctx.config.nsd_root, out, config.metrics,
                                    weights_dir=config.weights_dir, size=config.size, device=ctx.config.device)
        logger.info("wrote %s (%d methods%s)", out, len(result["methods"]),
                    f", {result['weights']}" if "weights" in result else "")
        return result
