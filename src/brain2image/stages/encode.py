"""``encode``: encoding models from LDM components (z, c, z_c, U-Net) to visual cortex, with maps."""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import RunConfig, ZcConfig
from ..errors import InvalidArgumentError, MissingFileError
from ..formats.run_layout import RUN_FILES
from .base import Stage, StageContext
from .options import Option
from .registry import register_stage
from .tasks import Split, TaskSpec

__all__ = ["EncodeStage", "EncodeStores", "EncodePart", "zc_space_names"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EncodeStores:
    """The task of ``encode`` that computes (or resumes) the z_c / U-Net feature stores the config names."""

    def __str__(self) -> str:
        return "features_zc"


@dataclass(frozen=True)
class EncodePart:
    """A task of ``encode`` that fits one model: a feature space, or a partition pair ``a|b`` (:meth:`part_names`)."""

    name: str

    def __str__(self) -> str:
        return self.name


def _feature_arg(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"--features {text!r}: expected NAME=STORE.h5, e.g. z=features/z.h5")
    return name, Path(path)


def zc_space_names(zc: ZcConfig | None) -> list[str]:
    """Names of the feature spaces a :class:`ZcConfig` computes (``zc_<s>``, ``unet_<layer>_s<s>_t<f>``)."""
    if zc is None:
        return []
    from ..encoding.unet_features import n_run_steps, unet_feature_name, zc_feature_name

    names = []
    for strength in zc.zc_strengths:
        names.append(zc_feature_name(strength))
        if n_run_steps(strength, zc.num_inference_steps) > 0:
            names += [unet_feature_name(layer, strength, f) for layer in zc.unet_layers for f in zc.unet_steps]
    return names


@register_stage
class EncodeStage(Stage):
    """Voxelwise encoding models, variance partitioning and maps.

    The z_c / U-Net feature stores the config names (``[zc]`` in a run, ``--model`` in the command)
    are computed first, by :func:`brain2image.encoding.unet_features.extract_zc_stores`.

    A cluster runner runs it in pieces (:meth:`tasks`): :class:`EncodeStores`, then an
    :class:`EncodePart` of each of :meth:`part_names` (one model each, any order), then
    :meth:`finish` assembles them (:mod:`brain2image.encoding.parts`). The files are those of one
    plain run.
    """

    name = "encode"
    help = "encoding models: which LDM component explains which voxels"
    description = ("Fit voxelwise ridge encoding models from feature stores (z, c, and with --model z_c and U-Net "
                   "features computed first) to an ROI of a prepared file; write results.h5, summary.json and "
                   "maps into <out>/encoding/ (z_c / U-Net stores into <out>/features_zc/).")
    sections = ("encoding", "zc")
    run_keys = ("model", "device", "dtype")
    memory_options = ("encoding.target_chunk",)
    part_memory_options = {"features_zc": ("zc.batch_size",)}
    path_options = (
        Option("prepared", "prepared/subjXX.h5", type=Path, role="input", required=True),
        Option("features", "a feature store (repeat); z and c are needed with --model", type=_feature_arg,
               action="append", metavar="NAME=STORE", role="input", required=True),
        Option("out", "output folder (results in OUT/encoding/, z_c / U-Net stores in OUT/features_zc/)",
               type=Path, role="output", required=True),
    )
    option_overrides = {"model": {"default": None, "help": "compute the z_c / U-Net feature stores with this model "
                                  "('bundled', a diffusers folder or a cached hub id) and model them too"}}

    def context_from_args(self, args: argparse.Namespace, *, progress: bool = True) -> StageContext:
        """As a command, z_c / U-Net spaces are computed only with ``--model``."""
        ctx = super().context_from_args(args, progress=progress)
        if ctx.config.model is None:
            ctx.config.zc = None
        return ctx

    def check(self, config: RunConfig) -> None:
        """The device, and ``[encoding] backend`` on it (``torch_cuda`` needs a CUDA device)."""
        from ..ridge.backend import resolve_backend

        super().check(config)
        resolve_backend(config.encoding.backend, config.device, option="[encoding] backend")

    def enabled(self, config: RunConfig) -> bool:
        """``[encoding] enabled``."""
        return config.encoding.enabled

    def needs_model(self, config: RunConfig) -> bool:
        """When the config names z_c / U-Net spaces."""
        return config.zc is not None

    def needs_model_now(self, ctx: StageContext) -> bool:
        """Only the whole stage and its :class:`EncodeStores` task use the model (not a part's fit)."""
        return super().needs_model_now(ctx) and not isinstance(ctx.part, EncodePart)

    def _root(self, ctx: StageContext) -> Path:
        return Path(ctx.path("out", lambda: ctx.layout.root))

    def inputs(self, ctx: StageContext) -> dict[str, Any]:
        """``prepared`` and the z, c (and any other given) feature stores."""
        layout = ctx.layout
        stores = ctx.path("features", lambda: [(f, layout.feature_store(f)) for f in ctx.config.decoder.targets])
        return {"prepared": ctx.path("prepared", lambda: layout.prepared),
                **{f"features_{k}": Path(v) for k, v in stores}}

    def outputs(self, ctx: StageContext) -> dict[str, Any]:
        """``encoding``: the results folder (``summary.json``, ``results.h5``, maps)."""
        return {"encoding": self._root(ctx) / RUN_FILES["encoding"]}

    def redo_outputs(self, ctx: StageContext) -> dict[str, Any]:
        """The results folder and ``features_zc/`` (a rerun would reuse its stores)."""
        return {**self.outputs(ctx), "features_zc": self._root(ctx) / RUN_FILES["features_zc"]}

    def is_done(self, ctx: StageContext) -> bool:
        """``summary.json`` covers every feature space the config names, and ``results.h5`` keeps the z model.

        A results file written before the z model was kept (``/models/z``) is done again, so that
        ``brain_correlation`` finds the model.
        """
        from ..encoding.analysis import KEPT_MODELS
        from ..formats.encoding_results import has_encoding_model

        folder = self.outputs(ctx)["encoding"]
        path = folder / "summary.json"
        if not path.is_file():
            return False
        wanted = {k.removeprefix("features_") for k in self.inputs(ctx) if k != "prepared"}
        wanted |= set(zc_space_names(ctx.config.zc))
        if not wanted <= set(json.loads(path.read_text()).get("feature_stores", {})):
            return False
        return all(has_encoding_model(folder / "results.h5", space) for space in KEPT_MODELS if space in wanted)

    def _zc_stores(self, ctx: StageContext, stores: dict[str, Path]) -> dict[str, Path]:
        """Compute (or resume) the z_c / U-Net feature stores; returns name -> store."""
        from ..encoding.unet_features import extract_zc_stores

        if "z" not in stores or "c" not in stores:
            raise MissingFileError("encode: z_c / U-Net features need the z and c feature stores (--features "
                                   "z=STORE --features c=STORE); their ids and values seed the z_c runs")
        model = ctx.model()
        with ctx.timed("features_zc"):
            return extract_zc_stores(model.unet, model.vae, model.scheduler, model.empty_prompt_embedding(),
                                     stores["z"], stores["c"], self._root(ctx) / RUN_FILES["features_zc"],
                                     ctx.config.zc, model_name=model.name, progress=ctx.progress)

    def _given_stores(self, ctx: StageContext) -> dict[str, Path]:
        """The feature stores of the inputs (z, c, and any other a command was given), by name."""
        return {k.removeprefix("features_"): Path(v) for k, v in self.inputs(ctx).items() if k != "prepared"}

    def _zc_store_paths(self, ctx: StageContext) -> dict[str, Path]:
        """Where :meth:`_zc_stores` writes the z_c / U-Net stores the config names (computed or not)."""
        folder = self._root(ctx) / RUN_FILES["features_zc"]
        return {name: folder / f"{name}.h5" for name in zc_space_names(ctx.config.zc)}

    def _part_stores(self, ctx: StageContext) -> dict[str, Path]:
        """Every feature store of the analysis in part mode: the inputs, then the z_c / U-Net stores."""
        return {**self._given_stores(ctx), **self._zc_store_paths(ctx)}

    def part_names(self, ctx: StageContext) -> list[str]:
        """The fitting parts of the context's analysis: the feature spaces (z, c, z_c / U-Net), then the pairs.

        Each is the name of an :class:`EncodePart` task (:meth:`tasks`).
        """
        from ..encoding.parts import encoding_part_names

        return encoding_part_names(list(self._part_stores(ctx)), ctx.config.encoding.analysis_config())

    def run(self, ctx: StageContext, shard: tuple[int, int] | None = None) -> Any:
        """Fit the encoding models; returns the :class:`~brain2image.encoding.analysis.EncodingResults`.

        A context whose part is a task of :meth:`tasks` runs that piece instead: :class:`EncodeStores`
        computes (or resumes) the z_c / U-Net feature stores and returns them; an :class:`EncodePart`
        fits that model (its stores must be on disk) and returns its part file.

        Raises
        ------
        InvalidArgumentError
            For a part that is not one of this run's.
        """
        self.refuse_shard(shard)
        part = ctx.part
        if part is None:
            return self._run_whole(ctx)
        if isinstance(part, EncodeStores):
            return self._zc_stores(ctx, self._given_stores(ctx)) if ctx.config.zc is not None else {}
        if isinstance(part, EncodePart):
            return self._fit_part(ctx, part.name)
        raise InvalidArgumentError(f"encode: task part {part!r} is not one of encode's; expected EncodeStores() or "
                                   "EncodePart(name)")

    def tasks(self, ctx: StageContext, split: Split) -> list[list[TaskSpec]]:
        """The z_c / U-Net stores (when the config names them), then one task per model (:meth:`part_names`)."""
        parts = [TaskSpec(part=EncodePart(name)) for name in self.part_names(ctx)]
        return [parts] if ctx.config.zc is None else [[TaskSpec(part=EncodeStores())], parts]

    def finish(self, ctx: StageContext, tasks: Sequence[TaskSpec]) -> None:
        """Assemble the parts into ``results.h5``, maps and ``summary.json`` (unless the stage is done).

        Raises
        ------
        MissingFileError, DataFormatError
            A missing part, or parts of other inputs (:func:`~brain2image.encoding.parts.assemble_encoding_parts`).
        """
        if not self.is_done(ctx):
            self._assemble(ctx)

    def _run_whole(self, ctx: StageContext) -> Any:
        """The z_c / U-Net stores, then every model in one call."""
        from ..encoding.analysis import run_encoding_analysis

        stores = self._given_stores(ctx)
        if ctx.config.zc is not None:
            stores.update(self._zc_stores(ctx, stores))
        with ctx.timed("encode"):
            results = run_encoding_analysis(self.inputs(ctx)["prepared"], {k: str(v) for k, v in stores.items()},
                                            self._root(ctx), config=ctx.config.encoding.analysis_config(),
                                            device=ctx.config.device, progress=ctx.progress)
        self._log_results(results)
        return results

    @staticmethod
    def _log_results(results: Any) -> None:
        """Log each feature space's mean test r."""
        for name, space in results.spaces.items():
            logger.info("%s: mean r %.3f", name, float(space["r"].mean()))

    def _fit_part(self, ctx: StageContext, part: str) -> Path:
        """Fit one part (one feature space or one pair) into ``encoding/parts/``; its stores must exist."""
        from ..encoding.parts import fit_encoding_part

        names = self.part_names(ctx)
        if part not in names:
            raise InvalidArgumentError(f"encode: part {part!r} is not a part of this run; expected one of {names}")
        stores = self._part_stores(ctx)
        for name in part.split("|"):
            if not stores[name].is_file():
                raise MissingFileError(f"encode part {part!r}: feature store {stores[name]} not found; expected "
                                       "it written first (the features_zc task for z_c / U-Net spaces)")
        with ctx.timed("encode"):
            return fit_encoding_part(self.inputs(ctx)["prepared"], {k: str(v) for k, v in stores.items()},
                                     self._root(ctx), part, config=ctx.config.encoding.analysis_config(),
                                     device=ctx.config.device, progress=ctx.progress)

    def _assemble(self, ctx: StageContext) -> Any:
        """Join the parts into ``results.h5``, maps and ``summary.json``."""
        from ..encoding.parts import assemble_encoding_parts

        stores = self._part_stores(ctx)
        with ctx.timed("encode"):
            results = assemble_encoding_parts(self.inputs(ctx)["prepared"], {k: str(v) for k, v in stores.items()},
                                              self._root(ctx), config=ctx.config.encoding.analysis_config(),
                                              device=ctx.config.device, progress=ctx.progress)
        self._log_results(results)
        return results
