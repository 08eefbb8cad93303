"""``reconstruct``: z only / c only / z + c (and oracle) images from decoded (or true) features."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataFormatError, InvalidArgumentError, MissingFileError
from ..methods import needed_inputs, parse_methods
from .base import Stage, StageContext
from .options import Option, flag_of
from .registry import register_stage
from .tasks import TaskSpec, shard_count

__all__ = ["ReconstructStage", "batch_unit", "check_same_study", "read_aligned"]


def read_aligned(path: Path, ids: np.ndarray | None, what: str) -> tuple[np.ndarray, np.ndarray]:
    """(ids, values) of a decoder file's test predictions or of a feature store.

    With ``ids``, the rows are restricted to and ordered by them (a store reads only those rows).

    Raises
    ------
    MissingFileError
        When there is no file at ``path``.
    DataFormatError
        When the file has no row for some of ``ids``.
    """
    from ..formats.decoder_file import DecoderFile
    from ..formats.feature_store import FeatureStore

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path} not found: expected {what} as a decoder file or a feature store")
    values: np.ndarray | None
    if DecoderFile.is_decoder_file(path):
        file_ids, values = DecoderFile.read_predictions(path)
    else:
        store = FeatureStore.open(path)
        file_ids = np.asarray(store.ids, dtype=np.int64)
        values = None if ids is not None else store.read()
    if ids is None:
        return file_ids, np.asarray(values, dtype=np.float32)
    missing = np.setdiff1d(ids, file_ids)
    if len(missing):
        raise DataFormatError(f"{path}: {what} has no rows for ids {missing[:5].tolist()}; expected every test id")
    if values is None:
        return ids, np.asarray(store.read(ids), dtype=np.float32)
    order = np.argsort(file_ids)
    return ids, values[order][np.searchsorted(file_ids[order], ids)]


def check_same_study(inputs: dict[str, Path]) -> None:
    """Refuse decoder files or feature stores of different studies (``stimuli_identity``) or subjects.

    Files that do not record the study (written before it was recorded) are logged and skipped.

    Raises
    ------
    DataFormatError
        Naming both files, the field and both values.
    """
    from ..formats.decoder_file import DecoderFile
    from ..formats.feature_store import FeatureStore
    from ..formats.provenance import require_same_study

    files = [(path, DecoderFile.read_attrs(path) if DecoderFile.is_decoder_file(path) else FeatureStore(path).attrs)
             for path in inputs.values() if path is not None and Path(path).is_file()]
    require_same_study(files)
    require_same_study([(path, attrs) for path, attrs in files if "subject" in attrs], "subject",
                       warn_missing=False)


def batch_unit(config: Any) -> int:
    """The fewest test images after which every method's draws start a new batch (shards cut there).

    A method with diffusion draws ``n_samples`` images per test image in batches of ``batch_size``
    draws, one without draws ``batch_size`` test images at a time; a shard that starts at a multiple
    of this count batches its draws as one process does (the same batch shapes, the same floats).
    """
    unit = 1
    for method in parse_methods(config.methods):
        size = config.batch_size
        unit = math.lcm(unit, size // math.gcd(size, config.n_samples) if method.uses_diffusion else size)
    return unit


@register_stage
class ReconstructStage(Stage):
    """Images from decoded features with diffusers pipelines; resumable, shardable."""

    name = "reconstruct"
    help = "generate images from decoded z and c (z_only, c_only, z_plus_c, oracle)"
    description = ("Generate reconstructions with diffusers pipelines into <out>/<method>/<73kid>_<sample>.png "
                   "and <out>/index.csv. Inputs are decoder files (test/ids, test/pred) or feature stores. "
                   "Resumable; with --shard i/n only part i of the test ids, indexed in "
                   "index.shard-i-of-n.csv (`brain2image merge` or a later run without --shard completes "
                   "index.csv). Refuses inputs of different studies (stimuli_identity) or subjects.")
    sections = ("reconstruction",)
    run_keys = ("model", "device", "dtype")
    memory_options = ("reconstruction.batch_size",)
    path_options = (
        Option("z", "decoded z: decoder file or feature store", type=Path, role="input"),
        Option("c", "decoded c: decoder file or feature store", type=Path, role="input"),
        Option("z_true", "true z feature store (for --methods oracle)", type=Path, role="input"),
        Option("c_true", "true c feature store (for --methods oracle)", type=Path, role="input"),
        Option("out", "reconstruction folder (recon/ in a run)", type=Path, role="output", required=True),
    )
    extra_options = (Option("ids", "only these test ids (default: every id of the first input)", type=int,
                            nargs="+", metavar="ID"),)
    shardable = True

    def needs_model(self, config: Any) -> bool:
        """Always: the model draws the images."""
        return True

    def inputs(self, ctx: StageContext) -> dict[str, Any]:
        """The features the methods need (:func:`brain2image.methods.needed_inputs`)."""
        return {key: ctx.path(key, functools.partial(self._run_input, ctx, key))
                for key in needed_inputs(ctx.config.reconstruction.methods)}

    @staticmethod
    def _run_input(ctx: StageContext, key: str) -> Path:
        """In a run folder: the decoder of target ``key`` (from its ``[decoder] targets`` ROI) or a true store.

        ``<target>_true``: the target's feature store.
        """
        if key.endswith("_true"):
            return ctx.layout.feature_store(key.removesuffix("_true"))
        target, targets = key, ctx.config.decoder.targets
        if target not in targets:
            raise InvalidArgumentError(f"[reconstruction] methods {list(ctx.config.reconstruction.methods)} draw from "
                                       f"target {target!r}, which [decoder] targets {targets} does not decode; "
                                       f"expected {target} = \"<roi>\" in [decoder] targets")
        return ctx.layout.decoder(target, targets[target])

    def outputs(self, ctx: StageContext) -> dict[str, Any]:
        """``recon``: the reconstruction folder (``index.csv`` inside)."""
        return {"recon": ctx.path("out", lambda: ctx.layout.file("recon"))}

    def is_done(self, ctx: StageContext) -> bool:
        """Never skipped: a run resumes it (images on disk are kept) and it checks the folder's settings."""
        return False

    def finish(self, ctx: StageContext, tasks: Sequence[TaskSpec]) -> None:
        """Join the shards' ``index.shard-i-of-n.csv`` and records into ``index.csv`` and ``config.json``.

        Raises
        ------
        DataFormatError
            A missing shard, or shards that disagree
            (:meth:`~brain2image.formats.recon_index.ReconFolder.merge_shards`).
        """
        from ..formats.recon_index import ReconFolder

        n = shard_count(tasks)
        if n is not None:
            ReconFolder(self.outputs(ctx)["recon"]).merge_shards(n)

    @staticmethod
    def _default_ids(ctx: StageContext, inputs: dict[str, Any]) -> np.ndarray:
        """Every id of the first decoded input; in a run folder without one, the prepared test ids."""
        first = next((key for key in inputs if not key.endswith("_true")), None)
        if first is None and ctx.in_run_folder:
            from ..formats.prepared import PreparedData

            return np.asarray(PreparedData(ctx.layout.prepared).trials("test")["ids"], dtype=np.int64)
        first = first or next(iter(inputs))
        return read_aligned(inputs[first], None, first)[0]

    def _arrays(self, ctx: StageContext, shard: tuple[int, int] | None) -> tuple[np.ndarray, dict[str, Any]]:
        """The test ids and the aligned feature arrays of each needed input."""
        from ..formats.partitions import shard_ids

        inputs = self.inputs(ctx)
        missing = [key for key, path in inputs.items() if path is None]
        if missing:
            raise MissingFileError(f"methods {list(ctx.config.reconstruction.methods)} need "
                                   + ", ".join(flag_of(k) for k in missing))
        check_same_study(inputs)
        ids = ctx.extra.get("ids")
        ids = None if ids is None else np.asarray(ids, dtype=np.int64)
        if ids is None:
            ids = self._default_ids(ctx, inputs)
        if shard is not None:
            ids = shard_ids(ids, shard, batch_unit(ctx.config.reconstruction))
        return ids, {key: read_aligned(path, ids, key)[1] for key, path in inputs.items()}

    def run(self, ctx: StageContext, shard: tuple[int, int] | None = None) -> Path:
        """Write the images not on disk yet and ``index.csv``; returns the index's path."""
        from ..ldm.reconstruct import reconstruct

        ids, arrays = self._arrays(ctx, shard)
        config = ctx.config.reconstruction
        return reconstruct(ctx.model(), ids, methods=config.methods, config=config, out_dir=self.outputs(ctx)["recon"],
                           progress=ctx.progress, shard=shard, features=arrays)
