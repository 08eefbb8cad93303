"""``evaluate``: reconstructions + NSD stimuli -> the metric table (``evaluation.json`` in a run).

In a run folder the stage also records the decoders' top-1 retrieval in the decoded z and c
spaces (:mod:`brain2image.evaluation.retrieval`) under ``retrieval``: a property of the decoders,
the same for every reconstruction method.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from .._io import atomic_write_text
from .base import Stage, StageContext
from .options import Option
from .registry import register_stage
from .transfer import decoder_records

__all__ = ["EvaluateStage", "decoder_retrieval"]

logger = logging.getLogger(__name__)

def decoder_retrieval(decoder: Path, store: Path, target: str, *, n_candidates: int, n_draws: int,
                      seed: int) -> dict[str, Any]:
    """Retrieval between a decoder file's test predictions and the true features of the same 73k ids.

    Parameters
    ----------
    decoder : Path
        Decoder file (``test/ids``, ``test/pred``).
    store : Path
        The target's feature store (must hold every test id).
    target : str
        Feature name, for messages.
    n_candidates, n_draws, seed : int
        The protocol (:func:`~brain2image.evaluation.retrieval.retrieval_accuracy`).

    Returns
    -------
    dict
        :func:`~brain2image.evaluation.retrieval.retrieval_accuracy`'s result.

    Raises
    ------
    MissingFileError
        Without the decoder file or the store.
    DataFormatError
        When the store lacks a test id or the two files are of different studies or subjects.
    """
    from ..evaluation.retrieval import retrieval_accuracy
    from .reconstruct import check_same_study, read_aligned

    ids, decoded = read_aligned(decoder, None, f"decoded {target}")
    check_same_study({"decoder": decoder, "store": store})
    _, true = read_aligned(store, ids, f"true {target}")
    return retrieval_accuracy(decoded, true, n_candidates, n_draws, seed)


@register_stage
class EvaluateStage(Stage):
    """PixCorr, SSIM, both identifications and feature-space distances of every method; retrieval in a run."""

    name = "evaluate"
    help = "compute the metric table of reconstructions"
    description = ("Compute PixCorr, SSIM, two-way identification (MindEye and Takagi definitions) and "
                   "correlation distances of every method in a reconstruction folder. In a run folder, also "
                   "the decoders' top-1 image and brain retrieval in the decoded z and c spaces.")
    sections = ("evaluation",)
    run_keys = ("nsd_root", "device")
    recomputed = True  # rewritten from the outputs on disk on every run
    path_options = (
        Option("recon", "reconstruction folder with index.csv", type=Path, role="input", required=True),
        Option("out", "metrics JSON to write (evaluation.json in a run)", type=Path, role="output", required=True),
    )
    option_overrides = {"nsd_root": {"help": "NSD root holding nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5 "
                                     "(another source: --source KIND --root DIR)"},
                        "device": {"help": "torch device of the feature networks"}}

    def _retrieval_inputs(self, ctx: StageContext) -> dict[str, tuple[Path, Path]]:
        """Per decoder target (``[decoder] targets``), its decoder file and true feature store (run folders only)."""
        if not ctx.in_run_folder:
            return {}
        layout = ctx.layout
        return {t: (layout.decoder(t, roi), layout.feature_store(t)) for t, roi in ctx.config.decoder.targets.items()}

    def inputs(self, ctx: StageContext) -> dict[str, Any]:
        """``recon``: the reconstruction folder; in a run, also each target's decoder file and feature store."""
        retrieval = {f"{kind}_{t}": path for t, paths in self._retrieval_inputs(ctx).items()
                     for kind, path in zip(("decoder", "features"), paths)}
        return {"recon": ctx.path("recon", lambda: ctx.layout.file("recon")), **retrieval}

    def outputs(self, ctx: StageContext) -> dict[str, Any]:
        """``evaluation``: the metrics JSON."""
        return {"evaluation": ctx.path("out", lambda: ctx.layout.file("evaluation"))}

    def is_done(self, ctx: StageContext) -> bool:
        """Never skipped (seconds): a run recomputes it from the images on disk."""
        return False

    def retrieval(self, ctx: StageContext) -> dict[str, dict[str, Any]]:
        """``{target: retrieval}`` of the run's decoders (``{}`` outside a run folder)."""
        evaluation = ctx.config.evaluation
        return {t: decoder_retrieval(decoder, store, t, n_candidates=evaluation.retrieval_candidates,
                                     n_draws=evaluation.retrieval_draws, seed=evaluation.retrieval_seed)
                for t, (decoder, store) in self._retrieval_inputs(ctx).items()}

    def run(self, ctx: StageContext, shard: tuple[int, int] | None = None) -> dict:
        """Evaluate; returns what was written (``methods``, ``feature_spaces``, ``retrieval`` in a run, ...)."""
        from ..evaluation.evaluate import evaluate_recon_dir

        self.refuse_shard(shard)
        config, out = ctx.config.evaluation, self.outputs(ctx)["evaluation"]
        retrieval = self.retrieval(ctx)
        result = evaluate_recon_dir(self.inputs(ctx)["recon"], ctx.stimuli(), out, config.metrics,
                                    weights_dir=config.weights_dir, size=config.size, device=ctx.config.device)
        records = decoder_records(ctx)
        if retrieval or records:
            result.update({"retrieval": retrieval} if retrieval else {})
            result.update({"decoders": records} if records else {})  # a transfer run names its method
            atomic_write_text(out, json.dumps(result, indent=2))
        logger.info("wrote %s (%d methods%s)", out, len(result["methods"]),
                    f", {result['weights']}" if "weights" in result else "")
        return result
