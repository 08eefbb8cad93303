"""``features``: the feature store of each decoder target (z, c, ...) of a prepared file's images."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidArgumentError
from ..interrupts import say_skipped
from ..targets import BUILTIN_TARGETS, TARGET_CHOICES
from .base import CommandOutput, Stage, StageContext
from .options import Option
from .registry import register_stage
from .tasks import TaskSpec, shard_count

__all__ = ["FeaturesStage"]

logger = logging.getLogger(__name__)


def _merge_finished_shards(path: Path) -> bool:
    """Join ``<name>.shard-i-of-n.h5`` into ``path`` when every shard of some ``n`` is finished (the smallest)."""
    from ..formats.feature_store import merge_feature_shards
    from ..formats.partitions import SHARD, complete_counts

    counts = complete_counts(path, SHARD)
    if not counts:
        return False
    merge_feature_shards(path, counts[0])
    logger.info("merged %d shards into %s", counts[0], path)
    return True


@register_stage
class FeaturesStage(Stage):
    """Each target's features of every image of a prepared file (or of explicit ids); resumable, shardable."""

    name = "features"
    help = "compute the feature store of each target (z: VAE latent, c: caption embedding, ...)"
    description = ("Compute the features of each target (z, c, or any registered target) of every image in a "
                   "prepared file (or of explicit ids) into <out>/<dataset>_<model>_<target>.h5. In a run: the "
                   "targets of [decoder] targets. Resumable; with --shard i/n only part i of the ids "
                   "(a later run without --shard joins finished shards); no diffusion sampling.")
    sections = ("features",)
    run_keys = ("nsd_root", "model", "device", "dtype")
    memory_options = ("features.batch_size",)
    path_options = (
        Option("prepared", "prepared/subjXX.h5 (its /train/ids and /test/ids are used)", type=Path, role="input"),
        Option("out", "features folder", type=Path, role="output", required=True),
    )
    extra_options = (
        Option("ids", "explicit 0-based 73k ids (instead of --prepared)", type=int, nargs="+", metavar="ID"),
        Option("dataset", "dataset name in the store file names (default: the prepared file's stem without "
                          "'prepared_', else 'ids')"),
        Option("feature", "targets to compute (registered targets)", default=list(BUILTIN_TARGETS), nargs="+",
               choices=TARGET_CHOICES),
    )
    option_overrides = {"nsd_root": {"help": "NSD root (another source: --source KIND --root DIR)"}}
    shardable = True

    def needs_model(self, config: Any) -> bool:
        """Always: the model computes the features."""
        return True

    def _plan(self, ctx: StageContext) -> tuple[str, str, Path, tuple[str, ...]]:
        """(dataset, model label in the file names, folder, features)."""
        if ctx.in_run_folder:
            layout = ctx.layout
            return layout.dataset, ctx.config.model, layout.file("features"), tuple(ctx.config.decoder.targets)
        prepared, ids = ctx.paths.get("prepared"), ctx.extra.get("ids")  # type: ignore[union-attr]
        if (prepared is None) == (ids is None):
            raise InvalidArgumentError("features: give exactly one of --prepared (a prepared file) and --ids "
                                       "(73k ids)")
        dataset = ctx.extra.get("dataset") or (Path(prepared).stem.removeprefix("prepared_") if prepared else "ids")
        features = tuple(ctx.extra.get("feature") or BUILTIN_TARGETS)
        return dataset, ctx.model().name, Path(ctx.paths["out"]), features  # type: ignore[index]

    def inputs(self, ctx: StageContext) -> dict[str, Any]:
        """``prepared`` (absent with explicit ids)."""
        prepared = ctx.path("prepared", lambda: ctx.layout.prepared)
        return {} if prepared is None else {"prepared": prepared}

    def outputs(self, ctx: StageContext) -> dict[str, Any]:
        """One feature store per target (``z``, ``c``, ...)."""
        from ..formats.feature_store import feature_store_path

        dataset, label, folder, features = self._plan(ctx)
        return {f: feature_store_path(folder, dataset, label, f) for f in features}

    def _ids(self, ctx: StageContext) -> np.ndarray:
        from ..formats.prepared import PreparedData

        inputs = self.inputs(ctx)
        if "prepared" in inputs:
            return PreparedData(inputs["prepared"]).image_ids()
        return np.unique(np.asarray(ctx.extra["ids"], dtype=np.int64))

    def run(self, ctx: StageContext, shard: tuple[int, int] | None = None) -> list[Path]:
        """Write (or resume, or join the shards of) each store; returns the paths written."""
        from ..ldm.features import extract_features

        model, config, ids = ctx.model(), ctx.config.features, self._ids(ctx)
        written = []
        for feature, path in self.outputs(ctx).items():
            if shard is None and (path.is_file() or _merge_finished_shards(path)):
                say_skipped(ctx.progress, f"features {feature}: done, skipped")
                written.append(path)
                continue
            with ctx.timed(f"features_{feature}"):
                written.append(extract_features(ctx.stimuli(), ids, model, feature, path, config,
                                                progress=ctx.progress, shard=shard))
            logger.info("wrote %s", written[-1])
        self._write_record(ctx, ids, written, shard)
        return written

    def _write_record(self, ctx: StageContext, ids: np.ndarray, written: list[Path],
                      shard: tuple[int, int] | None) -> None:
        """``<folder>/config.json``: the model, dataset and settings of the last run.

        A shard writes its own ``config.shard-i-of-n.json`` (with ``shard: [i, n]``), so concurrent
        shards never write one file. Each store also carries its settings in its attributes.
        """
        from .._io import atomic_write_text
        from ..config import config_to_dict
        from ..formats.partitions import shard_path

        dataset, _, folder, _ = self._plan(ctx)
        model, config = ctx.model(), ctx.config.features
        record = {"model": model.name, "dataset": dataset, "n_images": int(len(ids)),
                  "config": config_to_dict(config), "stores": [p.name for p in written],
                  "z_resolution": int(config.z_resolution or model.z_resolution)}
        path = folder / "config.json"
        if shard is not None:
            record["shard"] = list(shard)
            path = shard_path(path, shard)
        atomic_write_text(path, json.dumps(record, indent=2, sort_keys=True))

    def finish(self, ctx: StageContext, tasks: Sequence[TaskSpec]) -> None:
        """Join the shards of each store not on disk yet, then write the features record as a run without shards.

        Raises
        ------
        DataFormatError
            A missing shard, or shards that disagree (:func:`~brain2image.formats.feature_store.merge_feature_shards`).
        """
        from ..formats.feature_store import merge_feature_shards

        n = shard_count(tasks)
        if n is None:
            return
        for path in self.outputs(ctx).values():
            if not Path(path).is_file():
                merge_feature_shards(path, n)
                logger.info("merged %d shards into %s", n, path)
        self.run(ctx)

    def command(self, ctx: StageContext) -> CommandOutput:
        """Run, then print the stores written (shard stores with ``--shard``)."""
        return CommandOutput([str(p) for p in self.run(ctx, ctx.extra.get("shard"))])
