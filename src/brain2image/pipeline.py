"""The whole method as one resumable run: every registered stage, in order.

prepare → features → fit → reconstruct → evaluate → encode → report, for a real NSD study
(``brain2image run CONFIG.toml``) or the embedded simulated one (``brain2image demo``).

Each stage (:mod:`brain2image.stages`) writes its outputs under the run folder and is skipped when
they are already there, so a killed run continues where it stopped. ``model.json`` records the
weights' fingerprint: resuming with other weights under the same folder is refused. The layout of
a run folder is :class:`~brain2image.formats.run_layout.RunLayout`'s::

    prepared/subjXX.h5                       prepare
    features/<dataset>_<model>_<target>.h5   features (one store per target of [decoder] targets)
    features_zc/                             encode (z_c / U-Net stores, when the config names them)
    decoders/subjXX_<target>_<roi>.h5        fit (one decoder per target)
    recon/                        reconstruct (PNGs + index.csv)
    evaluation.json               evaluate
    encoding/                     encode
    metrics.json, report.html     report
    run_config.json, timings.json, model.json
    stages/<stage>.json           the settings each finished stage computed with (a resume must keep them)

A config with ``subjects = [1, 2, 5, 7]`` (:func:`run_study`) runs each subject into its own such
folder ``out_dir/subjXX/``, then writes ``out_dir/summary.json`` and ``out_dir/report.html``
(:mod:`brain2image.study_summary`); ``out_dir/study_config.json`` holds its config.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ._io import atomic_write_text, remove_stale_temporaries
from .config import (
    EncodingOptions,
    RunConfig,
    check_config,
    is_missing_model_folder,
    load_run_config,
    run_config_from_dict,
)
from .errors import MissingFileError
from .formats.run_layout import RUN_FILES, RunLayout
from .sources import source_of

if TYPE_CHECKING:
    from .stages.base import Stage

#: The config of a several-subject run, saved in its ``out_dir`` (each subject's folder has its ``run_config.json``).
STUDY_CONFIG_FILE = "study_config.json"

__all__ = ["RunConfig", "EncodingOptions", "load_run_config", "run_config_from_dict", "run_pipeline",
           "check_run_inputs", "check_subjects_present", "subject_configs", "run_study", "check_study",
           "start_study", "start_run_folder", "report_path",
           "RUN_FILES", "STUDY_CONFIG_FILE"]

logger = logging.getLogger(__name__)


def check_run_inputs(config: RunConfig) -> None:
    """Check what a run reads before it writes anything: the data source's files and a model folder.

    A ``model`` that can only be a path (it starts with ``/``, ``.`` or ``~``, or is not of the form
    ``owner/name``) must be an existing folder; a hub id or ``random:`` name is checked when it loads.

    Raises
    ------
    MissingFileError
        When the source's files are not there (NSD: ``nsd_root`` is not a folder holding
        ``nsddata/``, :meth:`~brain2image.sources.DataSource.require_root`), or the ``model`` folder is missing.
    """
    source_of(config).require_root()
    model = config.model
    if is_missing_model_folder(model):
        raise MissingFileError(
            f"model = {model!r}: folder not found; expected 'bundled', a diffusers hub id in the local cache "
            "(owner/name), 'random:sd-v1-4' or an existing local diffusers folder")


def _checked_stages(config: RunConfig, stages: Sequence[str] | None,
                    redo: Sequence[str] | None = None) -> list[Stage]:
    """The stages a one-subject run runs, after every check made before anything is written.

    With ``redo`` (``()``: none), the last check: the run folder's finished stages were computed with
    the config's settings, but those ``redo`` recomputes
    (:func:`~brain2image.stages.recorded_settings.check_recorded_settings`); ``None``: not checked.

    Raises
    ------
    InvalidArgumentError, DataFormatError, MissingFileError
        As :func:`run_pipeline`.
    """
    from .stages import get_stage, pipeline_stages
    from .stages.recorded_settings import check_recorded_settings
    from .stages.registry import check_stage_settings

    check_stage_settings(config)
    wanted = None if stages is None else {get_stage(name).name for name in stages}
    chosen = [stage for stage in pipeline_stages() if wanted is None or stage.name in wanted]
    for stage in chosen:
        if stage.enabled(config):
            stage.check(config)
    check_run_inputs(config)
    if redo is not None:
        check_recorded_settings(config, chosen, redo)
    return chosen


def run_pipeline(config: RunConfig, *, progress: bool = True, timer_seed: dict[str, float] | None = None,
                 stages: Sequence[str] | None = None, redo: Sequence[str] = ()) -> Path:
    """Run (or resume) every stage of the method for one subject, in the run folder ``config.out_dir``.

    A config with ``subjects`` runs :func:`run_study` instead (one folder per subject, then the study summary).

    Parameters
    ----------
    config : RunConfig
    progress : bool
        Progress bars.
    timer_seed : dict, optional
        Timings of work done before (the demo's simulation), recorded with the stages'.
    stages : sequence of str, optional
        Only these stages (by name), in pipeline order; default: every registered stage.
    redo : sequence of str
        Stages to recompute (``--redo``), each with every stage after it: their old outputs and
        recorded settings are removed first.

    Returns
    -------
    Path of ``report.html``.

    Raises
    ------
    InvalidArgumentError
        Before anything is written: a value that does not fit its key (:func:`~brain2image.config.check_config`),
        or a stage refuses the config (:meth:`Stage.check <brain2image.stages.Stage.check>`): a
        ``device`` this machine lacks (``"cuda"`` without CUDA), a ``backend = "torch_cuda"``
        without a CUDA device.
    DataFormatError
        Before anything is written, for a table of a stage's settings with an unknown key.
    MissingFileError
        Before anything is written, for a missing NSD root or model folder (:func:`check_run_inputs`).
    DataFormatError
        Before anything is written, when a finished stage of the run folder was computed with other
        settings (``stages/<name>.json``) and ``redo`` does not recompute it.
    """
    from .stages import StageContext, Timings, run_stage
    from .stages.recorded_settings import remove_redone_outputs
    from .threads import pinned_threads

    check_config(config)
    if config.subjects is not None:
        return run_study(config, progress=progress, stages=stages, redo=redo)
    chosen = _checked_stages(config, stages, redo)
    layout = start_run_folder(config)
    timings = Timings(layout.file("timings"))
    timings.values.update(timer_seed or {})
    ctx = StageContext(config, progress=progress, timings=timings)
    remove_redone_outputs(ctx, chosen, redo)
    with pinned_threads(config.threads):  # the count every Ray worker of this run uses too
        for stage in chosen:
            run_stage(stage, ctx)
    return layout.file("report")


def start_run_folder(config: RunConfig) -> RunLayout:
    """Make a one-subject run folder ready: stale temporaries removed, ``run_config.json`` written.

    Returns
    -------
    RunLayout of ``config.out_dir``.
    """
    layout = RunLayout.of(config.out_dir, config.subject, config.model)
    remove_stale_temporaries(layout.root)
    layout.root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(layout.file("config"), json.dumps(config.to_dict(), indent=2))
    return layout


def report_path(config: RunConfig) -> Path:
    """``report.html`` of a one-subject run folder: what a run returns (a cluster runner too)."""
    return RunLayout.of(config.out_dir, config.subject, config.model).file("report")


def subject_configs(config: RunConfig) -> list[RunConfig]:
    """One single-subject config per subject of ``config.subjects``, each into ``<out_dir>/subjXX``.

    Each is the config a one-subject run of that subject would have (``subjects`` unset), so its
    folder is laid out, and resumed, exactly as a one-subject run's.
    """
    from .study_summary import subject_folder

    return [dataclasses.replace(config, subject=subject, subjects=None,
                                out_dir=str(Path(config.out_dir) / subject_folder(subject)))
            for subject in config.subjects or [config.subject]]


def check_subjects_present(config: RunConfig) -> None:
    """Check that every subject of the run is in its data source (NSD: ``nsddata/ppdata/subjXX`` and betas folders).

    Raises
    ------
    MissingFileError
        Naming the first missing subject and the folder looked at.
    """
    source = source_of(config)
    for subject in config.subjects or [config.subject]:
        source.require_subject(str(subject), config.prepare)


def check_study(config: RunConfig, stages: Sequence[str] | None = None,
                redo: Sequence[str] | None = None) -> list[Stage]:
    """Every check of :func:`run_study` (of a one-subject run without ``subjects``); writes nothing.

    ``redo`` (``()``: none) also checks each run folder's recorded settings (:func:`_checked_stages`);
    ``None`` leaves them to the run.

    Returns
    -------
    The stages each subject runs, in pipeline order.

    Raises
    ------
    InvalidArgumentError, DataFormatError, MissingFileError
        As :func:`run_study`.
    """
    check_config(config)
    check_run_inputs(config)
    check_subjects_present(config)
    singles = subject_configs(config) if config.subjects is not None else [config]
    return [_checked_stages(single, stages, redo) for single in singles][-1]


def start_study(config: RunConfig) -> list[RunConfig]:
    """Make a several-subject run's ``out_dir`` ready (``study_config.json``); returns each subject's config."""
    remove_stale_temporaries(config.out_dir)
    atomic_write_text(Path(config.out_dir) / STUDY_CONFIG_FILE, json.dumps(config.to_dict(), indent=2))
    return subject_configs(config)


def run_study(config: RunConfig, *, progress: bool = True, stages: Sequence[str] | None = None,
              redo: Sequence[str] = ()) -> Path:
    """Run (or resume) every subject of ``config.subjects``, then write the study's summary.

    The config is saved as ``<out_dir>/study_config.json``; each subject runs :func:`run_pipeline`
    into ``<out_dir>/subjXX/`` (finished stages are skipped, as in a one-subject run); then
    ``<out_dir>/summary.json`` and ``<out_dir>/report.html``
    (:func:`brain2image.study_summary.write_study_summary`) hold each subject's metrics and their
    mean and sd.

    Parameters
    ----------
    config : RunConfig
        With ``subjects`` set (None: the one ``subject``).
    progress : bool
        Progress bars.
    stages : sequence of str, optional
        Only these stages (by name) for each subject; the summary, which needs each subject's
        ``metrics.json``, is written only when they include ``report``.
    redo : sequence of str
        Stages each subject recomputes, with every stage after them (:func:`run_pipeline`).

    Returns
    -------
    Path of the study's ``report.html``.

    Raises
    ------
    InvalidArgumentError, DataFormatError, MissingFileError
        Before anything is written, as :func:`run_pipeline` for any subject's config; a subject
        missing from the NSD tree (:func:`check_subjects_present`).
    """
    from .study_summary import write_study_summary

    check_study(config, stages, redo)
    configs = start_study(config)
    for single in configs:
        logger.info("subject %s: run folder %s", single.subject, single.out_dir)
        run_pipeline(single, progress=progress, stages=stages, redo=redo)
    if stages is not None and "report" not in {name.replace("-", "_") for name in stages}:
        return report_path(config)  # the summary needs each subject's metrics.json (stage report)
    return write_study_summary(config.out_dir, [single.subject for single in configs])
