"""``transfer``: a new subject decoded through reference subjects' decoders (a run's ``[transfer]`` table).

With a ``[transfer]`` table the stage replaces ``fit``: it writes the decoder files of the run's
``[decoder] targets`` at fit's paths, holding predictions of the held-out test images only, so
reconstruct, evaluate and the report work on them unchanged (:mod:`brain2image.transfer`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..config import RunConfig
from ..errors import DataFormatError, MissingFileError
from ..transfer.settings import TransferSettings
from ..transfer.split import ReferenceSubject
from .base import Stage, StageContext
from .options import Option
from .registry import register_stage

__all__ = ["TransferStage", "reference_subjects", "decoder_records", "refuse_decoders_made_otherwise", "SPLIT_FILE"]

logger = logging.getLogger(__name__)

#: The split of a transfer run, relative to the run folder (or to ``--out``).
SPLIT_FILE = "transfer/split.json"


def reference_subjects(settings: TransferSettings, targets: dict[str, str]) -> list[ReferenceSubject]:
    """The references of ``settings``, each with its prepared file and decoder files, checked to be on disk.

    Raises
    ------
    MissingFileError
        A reference folder, prepared file or decoder file that is not there (the message names
        what is there instead: another ROI's decoder, or no decoder at all).
    """
    from ..formats.run_layout import RunLayout
    from ..study_summary import subject_folder

    study = Path(settings.reference_run)
    if not study.is_dir():
        raise MissingFileError(f"[transfer] reference_run = {str(study)!r}: no such folder; expected the study folder "
                               f"of the references (brain2image run with subjects = {settings.reference_subjects})")
    out = []
    for label in settings.reference_subjects:
        layout = RunLayout.of(study / subject_folder(label), label)
        if not layout.root.is_dir():
            raise MissingFileError(f"reference subject {label!r}: {layout.root} not found; expected a run folder of "
                                   f"{study} (run the references with subjects = {settings.reference_subjects})")
        if not layout.prepared.is_file():
            raise MissingFileError(f"reference subject {label!r}: {layout.prepared} not found; expected its prepared "
                                   "file (stage prepare of the references' run)")
        decoders = {target: layout.decoder(target, roi) for target, roi in targets.items()}
        for target, path in decoders.items():
            if not path.is_file():
                others = sorted(p.name for p in layout.file("decoders").glob(f"{layout.subject_tag}_{target}_*.h5"))
                there = f"; it holds {others} (fitted from another ROI)" if others else "; no decoder is fitted there"
                raise MissingFileError(f"reference subject {label!r}: decoder {path} not found{there}; expected its "
                                       f"full-data decoder of {target} from {targets[target]!r} (stage fit)")
        out.append(ReferenceSubject(label, layout.prepared, decoders))
    return out


def decoder_records(ctx: StageContext) -> dict[str, dict[str, Any]]:
    """How a transfer run's decoders were made (their ``transfer`` attribute), per target; ``{}`` for fitted ones.

    ``evaluation.json`` and ``metrics.json`` carry it as ``decoders``, so every output names the method.
    """
    import json

    from ..formats.decoder_file import DecoderFile

    if not ctx.in_run_folder:
        return {}
    attrs = {target: DecoderFile.read_attrs(ctx.layout.decoder(target, roi))
             for target, roi in ctx.config.decoder.targets.items() if ctx.layout.decoder(target, roi).is_file()}
    if not any("decoder_method" in a for a in attrs.values()):
        return {}
    return {target: json.loads(str(a.get("transfer", "{}"))) for target, a in attrs.items()}


def refuse_decoders_made_otherwise(paths: Any, *, by_transfer: bool, redo: str) -> None:
    """Refuse decoder files on disk that the other stage wrote (a fitted one for a transfer run, or the reverse).

    A run folder's decoders are fit's or transfer's; resuming with the other would keep decoders
    (and images made from them) of the other method without a word.

    Raises
    ------
    DataFormatError
        Naming the file, who wrote it and the way out (``--redo``, another ``out_dir``).
    """
    from ..formats.decoder_file import DecoderFile

    for path in map(Path, paths):
        if not path.is_file():
            continue
        method = DecoderFile.read_attrs(path).get("decoder_method")
        if by_transfer and method is None:
            raise DataFormatError(f"{path}: a decoder fitted by the fit stage (no attribute 'decoder_method'); this "
                                  f"run's [transfer] table writes transfer decoders there: rerun with --redo {redo} "
                                  "or another out_dir")
        if not by_transfer and method is not None:
            raise DataFormatError(f"{path}: written by the transfer stage (decoder_method {method!r}); this run has no "
                                  f"[transfer] table and fits its own decoders: rerun with --redo {redo} or another "
                                  "out_dir")


@register_stage
class TransferStage(Stage):
    """Cross-subject transfer: ridge maps into reference subjects' voxels, then their decoders."""

    name = "transfer"
    help = "decode a new subject through other subjects' decoders (cross-subject transfer)"
    description = ("Split the images every subject saw into alignment and held-out test images (seeded), fit a "
                   "ridge map from the new subject's ROI voxels of its first K sessions to each reference subject's, "
                   "apply each reference's full-data decoder to the mapped activity and combine them (or fit the "
                   "new subject's own decoder on the same sessions); predict the held-out test images and write "
                   "decoder files as fit does, with transfer/split.json. In a run: a [transfer] table, which "
                   "replaces the fit stage.")
    sections = ("decoder",)
    run_keys = ("device",)
    settings_class = TransferSettings
    replaces = ("fit",)
    memory_options = ("decoder.target_chunk",)
    path_options = (
        Option("prepared", "the new subject's prepared/subjXX.h5 (brain2image prepare)", type=Path, role="input",
               required=True),
        Option("features", "feature store of each [decoder] target (brain2image features)", type=Path, nargs="+",
               role="input", required=True),
        Option("out", "folder of the decoder files and of transfer/split.json", type=Path, role="output",
               required=True),
    )

    def enabled(self, config: RunConfig) -> bool:
        """With a ``[transfer]`` table."""
        return self.name in config.stage_settings

    def check(self, config: RunConfig) -> None:
        """The device, the backend, the settings and every reference's files, before anything is written."""
        from ..ridge.backend import resolve_backend
        from ..transfer.settings import check_transfer_settings

        super().check(config)
        resolve_backend(config.decoder.backend, config.device, option="[decoder] backend")
        settings = self.settings(config)
        check_transfer_settings(settings, config.subject)
        reference_subjects(settings, config.decoder.targets)

    def _stores(self, ctx: StageContext) -> dict[str, Path]:
        """The feature store of each target: the run folder's, or ``--features`` matched by their ``feature``."""
        from ..formats.feature_store import FeatureStore

        if ctx.in_run_folder:
            return {target: ctx.layout.feature_store(target) for target in ctx.config.decoder.targets}
        given = {str(FeatureStore.open(path).attrs.get("feature", Path(path).stem)): Path(path)
                 for path in (ctx.paths or {})["features"]}
        missing = [t for t in ctx.config.decoder.targets if t not in given]
        if missing:
            raise DataFormatError(f"--features {sorted(map(str, given.values()))} hold features {sorted(given)}; "
                                  f"expected a store of each target {missing} of --targets")
        return {target: given[target] for target in ctx.config.decoder.targets}

    def _decoder_paths(self, ctx: StageContext) -> dict[str, Path]:
        from ..formats.decoder_file import DecoderFile
        from ..formats.prepared import PreparedData

        targets = ctx.config.decoder.targets
        if ctx.in_run_folder:
            return {t: ctx.layout.decoder(t, roi) for t, roi in targets.items()}
        subject = PreparedData(self.inputs(ctx)["prepared"]).subject
        return {t: Path((ctx.paths or {})["out"]) / DecoderFile.filename(subject, t, roi) for t, roi in targets.items()}

    def inputs(self, ctx: StageContext) -> dict[str, Any]:
        """``prepared`` and the feature store of each target."""
        prepared = ctx.path("prepared", lambda: ctx.layout.prepared)
        return {"prepared": prepared, **{f"features_{t}": p for t, p in self._stores(ctx).items()}}

    def outputs(self, ctx: StageContext) -> dict[str, Any]:
        """The decoder file of each target and the split."""
        root = ctx.layout.root if ctx.in_run_folder else Path((ctx.paths or {})["out"])
        return {**{f"decoder_{t}": p for t, p in self._decoder_paths(ctx).items()}, "split": root / SPLIT_FILE}

    def is_done(self, ctx: StageContext) -> bool:
        """Every decoder file and the split are there; fitted decoders in their place are refused."""
        if ctx.in_run_folder:
            refuse_decoders_made_otherwise(self._decoder_paths(ctx).values(), by_transfer=True, redo=self.name)
        return super().is_done(ctx)

    def run(self, ctx: StageContext, shard: tuple[int, int] | None = None) -> Any:
        """Write the decoder files and the split (all again when any is missing)."""
        from ..transfer import transfer_decoders

        self.refuse_shard(shard)
        settings = self.settings(ctx.config)
        targets = ctx.config.decoder.targets
        references = reference_subjects(settings, targets)
        stores, outs = self._stores(ctx), self._decoder_paths(ctx)
        with ctx.timed("transfer"):
            result = transfer_decoders(self.inputs(ctx)["prepared"],
                                       {t: (roi, stores[t], outs[t]) for t, roi in targets.items()},
                                       references, settings, self.outputs(ctx)["split"], config=ctx.config.decoder,
                                       device=ctx.config.device, progress=ctx.progress)
        return result
