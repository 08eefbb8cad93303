"""The whole method as one resumable run: every registered stage, in order.

prepare → features → fit → reconstruct → evaluate → encode → report, for a real NSD study
(``brain2image run CONFIG.toml``) or the embedded simulated one (``brain2image demo``).

Each stage (:mod:`brain2image.stages`) writes its outputs under the run folder and is skipped when
they are already there, so a killed run continues where it stopped. ``model.json`` records the
weights' fingerprint: resuming with other weights under the same folder is refused. The layout of
a run folder is :class:`~brain2image.formats.run_layout.RunLayout`'s::

    prepared/subjXX.h5            prepare
    features/nsd_<model>_{z,c}.h5 features
    features_zc/                  encode (z_c / U-Net stores, when the config names them)
    decoders/subjXX_z_<roi>.h5    fit (and c)
    recon/                        reconstruct (PNGs + index.csv)
    evaluation.json               evaluate
    encoding/                     encode
    metrics.json, report.html     report
    run_config.json, timings.json, model.json
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from ._io import atomic_write_text
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

__all__ = ["RunConfig", "EncodingOptions", "load_run_config", "run_config_from_dict", "run_pipeline",
           "check_run_inputs", "build_report", "RUN_FILES"]

logger = logging.getLogger(__name__)


def build_report(run_dir: str | os.PathLike, *, n_images: int | None = None) -> Path:
    """Write ``report.html`` of a run folder that has ``metrics.json``.

    See :func:`brain2image.stages.report.build_report`.
    """
    from .stages.report import build_report as build

    return build(run_dir, n_images=n_images)




def check_run_inputs(config: RunConfig) -> None:
    """Check what a run reads before it writes anything: the NSD root and a model folder.

    A ``model`` that can only be a path (it starts with ``/``, ``.`` or ``~``, or is not of the form
    ``owner/name``) must be an existing folder; a hub id or ``random:`` name is checked when it loads.

    Raises
    ------
    MissingFileError
        When ``nsd_root`` is not a folder holding ``nsddata/``, or the ``model`` folder is missing.
    """
    expected = "expected the NSD root, the folder holding nsddata/, nsddata_betas/ and nsddata_stimuli/"
    root = Path(config.nsd_root)
    if not root.is_dir():
        raise MissingFileError(f"nsd_root = {config.nsd_root!r}: folder not found; {expected}")
    if not (root / "nsddata").is_dir():
        raise MissingFileError(f"nsd_root = {config.nsd_root!r}: no nsddata/ folder in it; {expected}")
    model = config.model
    if is_missing_model_folder(model):
        raise MissingFileError(
            f"model = {model!r}: folder not found; expected 'bundled', a diffusers hub id in the local cache "
            "(owner/name), 'random:sd-v1-4' or an existing local diffusers folder")


def run_pipeline(config: RunConfig, *, progress: bool = True, timer_seed: dict[str, float] | None = None,
                 stages: Sequence[str] | None = None) -> Path:
    """Run (or resume) every stage of the method for one subject, in the run folder ``config.out_dir``.

    Parameters
    ----------
    config : RunConfig
    progress : bool
        Progress bars.
    timer_seed : dict, optional
        Timings of work done before (the demo's simulation), recorded with the stages'.
    stages : sequence of str, optional
        Only these stages (by name), in pipeline order; default: every registered stage.

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
    """
    from .stages import StageContext, Timings, get_stage, pipeline_stages, run_stage
    from .stages.registry import check_stage_settings

    check_config(config)
    check_stage_settings(config)
    wanted = None if stages is None else {get_stage(name).name for name in stages}
    chosen = [stage for stage in pipeline_stages() if wanted is None or stage.name in wanted]
    for stage in chosen:
        if stage.enabled(config):
            stage.check(config)
    check_run_inputs(config)
    if config.threads:
        import torch

        torch.set_num_threads(config.threads)
    layout = RunLayout.of(config.out_dir, config.subject, config.model)
    layout.root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(layout.file("config"), json.dumps(config.to_dict(), indent=2))
    timings = Timings(layout.file("timings"))
    timings.values.update(timer_seed or {})
    ctx = StageContext(config, progress=progress, timings=timings)
    for stage in chosen:
        run_stage(stage, ctx)
    return layout.file("report")
