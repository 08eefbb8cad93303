"""``brain_correlation``: MindEye2's brain correlation of every reconstruction method (and of the seen images).

Each reconstruction's z (computed as the ``features`` stage computes z of the stimuli, with the
settings of the run's z store) goes through the subject's z encoding model (kept by ``encode`` in
``encoding/results.h5``); the predicted responses are correlated across the voxels of each
``[encoding] summary_rois`` ROI with the measured test responses (repeats averaged) to the seen
image, and averaged over images and samples. The seen images' true z give the ceiling, ``seen``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._io import atomic_write_text
from ..config import RUN_SECTIONS, RunConfig
from ..errors import DataFormatError
from ..formats.run_layout import RUN_FILES
from .base import Stage, StageContext
from .options import RUN, Option, merge_options, section_options
from .registry import register_stage

if TYPE_CHECKING:
    from ..formats.encoding_results import EncodingModel

__all__ = ["BrainCorrelationStage", "SPACE", "expected_record"]

logger = logging.getLogger(__name__)

#: The feature space of the encoding model the reconstructions go through.
SPACE = "z"
#: Keys of ``[encoding]`` the stage reads.
ENCODING_KEYS = ("summary_rois",)


def _recon_plan(recon: Path) -> tuple[dict[str, dict[int, list[Path]]], np.ndarray, int]:
    """The images of each method, the test ids with any reconstruction (sorted), the most samples per id."""
    from ..formats.recon_index import ReconFolder

    images = ReconFolder(recon).read_index()
    ids = np.unique(np.concatenate([np.fromiter(per_id, dtype=np.int64) for per_id in images.values()]))
    n_samples = max(len(paths) for per_id in images.values() for paths in per_id.values())
    return images, ids, int(n_samples)


def expected_record(methods: list[str], rois: list[str], n_images: int, n_samples: int) -> dict[str, Any]:
    """What ``brain_correlation.json`` holds apart from the correlations (for :meth:`BrainCorrelationStage.is_done`)."""
    return {"space": SPACE, "rois": list(rois), "methods": sorted([*methods, "seen"]), "n_images": int(n_images),
            "n_samples": int(n_samples)}


@register_stage
class BrainCorrelationStage(Stage):
    """Brain correlation of each reconstruction method and of the seen images, per summary ROI."""

    name = "brain_correlation"
    help = "brain correlation (MindEye2): encoding-model responses to the reconstructions vs measured ones"
    description = ("Compute z of every reconstruction as the features stage does for stimuli, predict voxel "
                   "responses with the subject's z encoding model (encoding/results.h5 of `brain2image encode`), "
                   "correlate them across the voxels of each [encoding] summary ROI with the measured test "
                   "responses to the seen image and average over images and samples; the seen images' own z give "
                   "the ceiling ('seen'). Writes brain_correlation.json.")
    sections = ("encoding", "brain_correlation")
    run_keys = ("model", "device", "dtype")
    memory_options = ("brain_correlation.batch_size",)
    path_options = (
        Option("encoding", "encoding/results.h5 with the z model (brain2image encode)", type=Path, role="input",
               required=True),
        Option("prepared", "prepared/subjXX.h5 (the measured test responses)", type=Path, role="input",
               required=True),
        Option("z_store", "the z feature store (the seen images' z and the z settings)", type=Path, role="input",
               required=True),
        Option("recon", "reconstruction folder with index.csv", type=Path, role="input", required=True),
        Option("out", f"JSON to write ({RUN_FILES['brain_correlation']} in a run)", type=Path, role="output",
               required=True),
    )

    @classmethod
    def options(cls) -> tuple[Option, ...]:
        """Paths, the model keys, ``[encoding] summary_rois`` (only) and ``[brain_correlation]``."""
        generated = section_options(RunConfig, RUN, cls.run_keys)
        generated += section_options(RUN_SECTIONS["encoding"], "encoding", ENCODING_KEYS)
        generated += section_options(RUN_SECTIONS["brain_correlation"], "brain_correlation")
        return merge_options([*cls.path_options, *generated], cls.option_overrides)

    def enabled(self, config: RunConfig) -> bool:
        """With the encoding analysis (``[encoding] enabled``): it needs the z encoding model."""
        return config.encoding.enabled

    def needs_model(self, config: RunConfig) -> bool:
        """Always: the model's VAE computes z of the reconstructions."""
        return True

    def inputs(self, ctx: StageContext) -> dict[str, Any]:
        """``encoding`` (results file), ``prepared``, ``z_store`` and ``recon``."""
        layout = ctx.layout
        return {"encoding": ctx.path("encoding", lambda: layout.file("encoding") / "results.h5"),
                "prepared": ctx.path("prepared", lambda: layout.prepared),
                "z_store": ctx.path("z_store", lambda: layout.feature_store(SPACE)),
                "recon": ctx.path("recon", lambda: layout.file("recon"))}

    def outputs(self, ctx: StageContext) -> dict[str, Any]:
        """``brain_correlation``: the JSON."""
        return {"brain_correlation": ctx.path("out", lambda: ctx.layout.file("brain_correlation"))}

    def is_done(self, ctx: StageContext) -> bool:
        """The JSON exists and covers the reconstruction folder's methods, images and samples and the ROIs."""
        path, recon = Path(self.outputs(ctx)["brain_correlation"]), Path(self.inputs(ctx)["recon"])
        if not path.is_file() or not (recon / "index.csv").is_file():
            return False
        try:
            record = json.loads(path.read_text())
            images, ids, n_samples = _recon_plan(recon)
        except (ValueError, OSError):
            return False
        expected = expected_record(list(images), list(ctx.config.encoding.summary_rois), len(ids), n_samples)
        found = {**{k: record.get(k) for k in expected}, "methods": sorted(record.get("methods", {}))}
        return found == expected

    def run(self, ctx: StageContext, shard: tuple[int, int] | None = None) -> Path:
        """Compute and write ``brain_correlation.json``; returns its path."""
        from ..encoding.brain_correlation import brain_correlation
        from ..encoding.image_latents import LatentSettings, image_latents
        from ..formats.feature_store import FeatureStore

        self.refuse_shard(shard)
        inputs = {k: Path(v) for k, v in self.inputs(ctx).items()}
        model, (test_ids, responses), masks = self._encoding_side(ctx, inputs)
        images, ids, n_samples = _recon_plan(inputs["recon"])
        store = FeatureStore.open(inputs["z_store"])
        settings = LatentSettings.of_store(store.attrs, where=str(inputs["z_store"]))
        seen_rows = _rows_of(test_ids, ids, inputs["prepared"])
        methods: dict[str, dict[str, float | None]] = {}
        batch = ctx.config.brain_correlation.batch_size
        for method, per_id in images.items():
            latents = image_latents(ctx.model(), per_id, settings, batch_size=batch, progress=ctx.progress,
                                    desc=f"z of {method}")
            rows = _rows_of(test_ids, np.fromiter(per_id, dtype=np.int64), inputs["prepared"])
            methods[method] = brain_correlation(model, latents, responses[rows], masks)
            logger.info("brain correlation of %s: %s", method, methods[method])
        methods["seen"] = brain_correlation(model, store.read(ids)[:, None], responses[seen_rows], masks)
        record = {"space": SPACE, "rois": list(masks), "methods": methods, "n_images": int(len(ids)),
                  "n_samples": n_samples}
        out = Path(self.outputs(ctx)["brain_correlation"])
        atomic_write_text(out, json.dumps(record, indent=2))
        return out

    def _encoding_side(self, ctx: StageContext, inputs: dict[str, Path]
                       ) -> tuple[EncodingModel, tuple[np.ndarray, np.ndarray], dict[str, np.ndarray]]:
        """The z encoding model, ``(test ids, measured test responses)`` of its ROI, and the summary ROI masks."""
        from ..encoding.outputs import summary_masks, voxel_keys
        from ..formats.encoding_results import read_encoding_model
        from ..formats.prepared import PreparedData

        model = read_encoding_model(inputs["encoding"], SPACE)
        prepared = PreparedData(inputs["prepared"])
        positions = prepared.positions(model.roi)
        if not np.array_equal(voxel_keys(positions), model.voxel_keys):
            raise DataFormatError(f"{inputs['encoding']}: the z model's voxels (field 'voxel_keys') are not those of "
                                  f"ROI {model.roi!r} in {inputs['prepared']}; run `brain2image encode` on this "
                                  "prepared file again")
        responses, test_ids = prepared.test(model.roi)
        masks = summary_masks(inputs["prepared"], positions, ctx.config.encoding.summary_rois)
        return model, (test_ids, responses), {k: v for k, v in masks.items() if k != "all"}


def _rows_of(test_ids: np.ndarray, ids: np.ndarray, prepared: Path) -> np.ndarray:
    """Row of each id among the prepared file's test ids (sorted)."""
    rows = np.searchsorted(test_ids, ids)
    found = (rows < len(test_ids)) & (test_ids[np.minimum(rows, len(test_ids) - 1)] == ids)
    if not found.all():
        raise DataFormatError(f"{prepared}: reconstructed ids {ids[~found][:5].tolist()} are not test ids (field "
                              "'/test/ids'); expected reconstructions of this prepared file's test images")
    return rows

