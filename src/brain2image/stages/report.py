"""``report``: the run's summary (``metrics.json``) and its self-contained HTML page (``report.html``)."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from .._io import atomic_write_text
from ..errors import DataFormatError, MissingFileError
from ..formats.run_layout import RUN_FILES
from ..methods import method_names
from .base import CommandOutput, Stage, StageContext, Timings
from .options import Option
from .registry import register_stage
from .transfer import decoder_records

__all__ = ["ReportStage", "collect_metrics", "build_report"]


def _brain_correlation(run_dir: Path) -> dict[str, Any] | None:
    """The run's ``brain_correlation.json`` (``None`` without one).

    Raises
    ------
    DataFormatError
        When the file is not a JSON object.
    """
    path = run_dir / RUN_FILES["brain_correlation"]
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise DataFormatError(f"{path}: not valid JSON ({error}); expected the brain_correlation stage's "
                              "record") from None
    if not isinstance(record, dict) or not isinstance(record.get("methods"), dict):
        raise DataFormatError(f"{path}: field 'methods' is missing; expected {{method: {{roi: mean r}}}}")
    return record


def collect_metrics(ctx: StageContext) -> dict[str, Any]:
    """``metrics.json`` of a run folder: each method's metrics, decoding accuracy, stage times.

    Also the decoders' ``retrieval`` (from ``evaluation.json``) and ``brain_correlation`` (from
    ``brain_correlation.json``), each when the run has it.

    Raises
    ------
    MissingFileError
        Without ``evaluation.json`` or a decoder file.
    """
    from ..formats.decoder_file import DecoderFile
    from ..ldm.random_model import random_weights_marking

    layout, config = ctx.layout, ctx.config
    path = layout.file("evaluation")
    if not path.is_file():
        raise MissingFileError(f"{path} not found: run the evaluate stage (brain2image run) first")
    evaluation = json.loads(path.read_text())
    metrics: dict[str, Any] = dict(evaluation["methods"])
    metrics["decoding"] = {f"{target} <- {roi}": DecoderFile.read(layout.decoder(target, roi)).summary()
                           for target, roi in config.decoder.targets.items()}
    records = decoder_records(ctx)
    if records:  # a transfer run: how its decoders were made
        metrics["decoders"] = records
    metrics["timings_s"] = dict(ctx.timings.values)
    metrics["timings_s"]["total"] = round(sum(ctx.timings.values.values()), 2)
    metrics["feature_spaces"] = evaluation.get("feature_spaces")
    metrics["metric_set"] = evaluation.get("metric_set")
    if "retrieval" in evaluation:
        metrics["retrieval"] = evaluation["retrieval"]
    brain_correlation = _brain_correlation(layout.root)
    if brain_correlation is not None:
        metrics["brain_correlation"] = brain_correlation
    metrics["model"] = config.model
    metrics.update(random_weights_marking(config.model, ctx.stimuli()))
    metrics["brain2image_version"] = __version__
    return metrics


def _encoding_parts(run_dir: Path) -> tuple[dict | None, list[Path]]:
    """The encoding summary's mean r table and the encoding figures, when the run has them."""
    summary_path = run_dir / "encoding" / "summary.json"
    if not summary_path.is_file():
        return None, []
    summary = json.loads(summary_path.read_text())
    return summary.get("mean_r", summary), sorted((run_dir / "encoding").rglob("*.png"))


def _feature_spaces(run_dir: Path, metrics: dict[str, Any]) -> list[str] | None:
    """Feature spaces of the run's evaluation: from ``metrics.json``, else ``evaluation.json``, else its metric set."""
    from ..evaluation.evaluate import METRIC_SETS
    from ..formats.run_layout import RUN_FILES

    sources = [metrics]
    evaluation_path = run_dir / RUN_FILES["evaluation"]
    if evaluation_path.is_file():
        sources.append(json.loads(evaluation_path.read_text()))
    for source in sources:
        if source.get("feature_spaces"):
            return list(source["feature_spaces"])
        if source.get("metric_set") in METRIC_SETS:
            return list(METRIC_SETS[source["metric_set"]])
    return None


def _transfer_note(target: str, record: Mapping[str, Any]) -> str:
    """One line on how a transfer run's decoder of ``target`` was made (``metrics.json``'s ``decoders``)."""
    sessions = f"the first {record.get('sessions')} of {record.get('n_sessions')} session(s)"
    own = (f"the subject's own decoder on {sessions}" if record.get("decoder") in ("own", "transfer+own") else "")
    refs = record.get("references", {})
    through = (f"the full-data decoders of subjects {', '.join(map(str, refs))} through ridge maps fitted on "
               f"{', '.join(str(r.get('alignment_images')) for r in refs.values())} images of {sessions} "
               f"({record.get('combine')} of them)") if refs else ""
    made = " and ".join(part for part in (own, through) if part) + (" (mean)" if own and through else "")
    return (f"Decoded {target}: {record.get('decoder')}, from {made}; scored on {record.get('n_test_images')} held-out "
            f"test images that no fit saw (seed {record.get('seed')}).")


def build_report(run_dir: str | os.PathLike, *, n_images: int | None = None) -> Path:
    """Write ``report.html`` of a run folder that has ``metrics.json``.

    Parameters
    ----------
    run_dir : path-like
    n_images : int, optional
        Test images in the grid (default: the run config's ``[report] n_images``).

    Returns
    -------
    Path of ``report.html``.
    """
    import pandas as pd

    from ..evaluation.evaluate import load_real_images
    from ..formats.run_layout import RUN_FILES
    from ..report import write_report
    from ..sources import stimuli_of_record

    run_dir = Path(run_dir)
    metrics_path = run_dir / RUN_FILES["metrics"]
    if not metrics_path.is_file():
        raise MissingFileError(f"{metrics_path} not found: run the pipeline (brain2image run / demo) first")
    metrics = json.loads(metrics_path.read_text())
    config = json.loads((run_dir / RUN_FILES["config"]).read_text())
    recon_dir = run_dir / RUN_FILES["recon"]
    index = pd.read_csv(recon_dir / "index.csv")
    n_images = config.get("report", {}).get("n_images", 8) if n_images is None else n_images
    stimuli = stimuli_of_record(config)
    if stimuli is None:
        raise DataFormatError(f"{run_dir / RUN_FILES['config']}: neither nsd_root nor a source table; expected "
                              "the config of a run folder made by `brain2image run` or `demo`")
    real_ids, real_images = load_real_images(stimuli, np.unique(index.test_id.to_numpy())[:n_images])
    encoding_summary, figures = _encoding_parts(run_dir)
    notes = [f"Model: {config['model']}. Stimuli: {stimuli.describe()}. Subject {config['subject']}.",
             f"Test images: {index.test_id.nunique()}; samples per image: "
             f"{int(index['sample'].max()) + 1}. Generated by brain2image {metrics.get('brain2image_version')}."]
    notes += [_transfer_note(target, record) for target, record in metrics.get("decoders", {}).items()]
    return write_report(run_dir / RUN_FILES["report"], title="brain2image: reconstructions from fMRI",
                        seen={int(i): img for i, img in zip(real_ids, real_images)}, recon_index=index,
                        recon_root=recon_dir, metrics={k: v for k, v in metrics.items() if k in method_names()},
                        decoding=metrics.get("decoding", {}), config=config,
                        timings={k: v for k, v in metrics.get("timings_s", {}).items() if k != "total"},
                        encoding_summary=encoding_summary, encoding_figures=figures, notes=notes,
                        feature_spaces=_feature_spaces(run_dir, metrics), n_images=n_images,
                        retrieval=metrics.get("retrieval"), brain_correlation=metrics.get("brain_correlation"))


@register_stage
class ReportStage(Stage):
    """``metrics.json`` (metrics, decoding accuracy, times) and ``report.html`` of a run folder."""

    name = "report"
    help = "write metrics.json and report.html for a run folder"
    description = ("Collect the run's metrics, decoders' retrieval, brain correlation (when the run has it), "
                   "decoding accuracy and stage times into metrics.json, then write one self-contained HTML page "
                   "(reconstruction grid, metric table, retrieval, brain correlation, decoding accuracy, "
                   "encoding maps, config, timings) for a run folder made by `run` or `demo`. On the study folder "
                   "of a run with subjects = [...]: its summary.json and report.html across subjects.")
    sections = ("report",)
    recomputed = True  # rewritten from the outputs on disk on every run
    path_options = (Option("run_dir", "run folder (a study folder of a run with subjects = [...]: its summary.json "
                           "and report.html across subjects)", type=Path, role="input", positional=True),)
    option_overrides = {"n_images": {"default": None, "help": "test images in the report's grid (default: the "
                                     "run config's [report] n_images)"}}
    timed = False

    def context_from_args(self, args: argparse.Namespace, *, progress: bool = True) -> StageContext:
        """The run folder's own context: its ``run_config.json`` and ``timings.json``."""
        from ..config import run_config_from_dict
        from ..formats.run_layout import RUN_FILES
        from ..pipeline import STUDY_CONFIG_FILE

        run_dir = Path(args.run_dir)
        path = run_dir / RUN_FILES["config"]
        study = not path.is_file() and (run_dir / STUDY_CONFIG_FILE).is_file()
        if study:  # a several-subject run's folder: its study report
            path = run_dir / STUDY_CONFIG_FILE
        elif not path.is_file():
            raise MissingFileError(f"{path} not found: expected a run folder made by `brain2image run` or `demo` "
                                   "(a subject's folder, or the study folder of a run with subjects = [...])")
        config = run_config_from_dict(json.loads(path.read_text()), where=str(path))
        config.out_dir = str(run_dir)
        if args.n_images is not None:
            config.report.n_images = args.n_images
        return StageContext(config, progress=progress, timings=Timings(run_dir / RUN_FILES["timings"]),
                            extra={"study": study})

    def outputs(self, ctx: StageContext) -> dict[str, Any]:
        """``metrics`` and ``report``."""
        return {"metrics": ctx.layout.file("metrics"), "report": ctx.layout.file("report")}

    def is_done(self, ctx: StageContext) -> bool:
        """Never skipped: the summary is rewritten at the end of every run."""
        return False

    def run(self, ctx: StageContext, shard: tuple[int, int] | None = None) -> Path:
        """Write ``metrics.json`` and ``report.html`` (run folders only); returns the report's path."""
        self.refuse_shard(shard)
        atomic_write_text(ctx.layout.file("metrics"), json.dumps(collect_metrics(ctx), indent=2))
        return build_report(ctx.layout.root, n_images=ctx.config.report.n_images)

    def command(self, ctx: StageContext) -> CommandOutput:
        """Write both files; print the report's path. On a study folder: its ``summary.json`` and ``report.html``."""
        if ctx.extra.get("study"):
            from ..study_summary import write_study_summary

            subjects = ctx.config.subjects or [ctx.config.subject]
            return CommandOutput([str(write_study_summary(ctx.layout.root, subjects).resolve())])
        return CommandOutput([str(self.run(ctx, ctx.extra.get("shard")).resolve())])
