"""The whole method as one resumable run: prepare → features → fit → reconstruct → evaluate
→ encode → report, for a real NSD study (``brain2image run CONFIG.toml``) or the embedded
simulated one (``brain2image demo``).

Each stage writes its outputs under the run folder and is skipped when they are already
there, so a killed run continues where it stopped. ``model.json`` records the weights'
fingerprint: resuming with other weights under the same folder is refused. The layout of a
run folder::

    prepared/subjXX.h5            brain2image prepare
    features/nsd_<model>_{z,c}.h5 brain2image features
    decoders/subjXX_z_<roi>.h5    brain2image fit (and c)
    recon/                        brain2image reconstruct (PNGs + index.csv)
    evaluation.json               brain2image evaluate
    encoding/                     brain2image encode
    metrics.json, report.html     the summary of the run
    run_config.json, timings.json, model.json
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from ._io import atomic_write_text
from .config import (
    DecoderConfig,
    EncodingConfig,
    FeatureConfig,
    ReconstructionConfig,
    config_from_dict,
    config_to_dict,
)
from .errors import DataFormatError, MissingFileError

__all__ = ["RunConfig", "load_run_config", "run_config_from_dict", "run_pipeline", "build_report",
           "RUN_FILES"]

logger = logging.getLogger(__name__)

#: Files of a run folder, relative to it.
RUN_FILES = {
    "metrics": "metrics.json",
    "evaluation": "evaluation.json",
    "report": "report.html",
    "timings": "timings.json",
    "config": "run_config.json",
    "model": "model.json",
    "recon": "recon",
    "encoding": "encoding",
}


@dataclass
class EvaluationOptions:
    """Which metric set to compute: ``embedded`` (pixels + the scene evaluator) or ``full``
    (the field's table; needs pretrained feature networks in ``weights_dir``)."""

    metrics: str = "embedded"
    weights_dir: str | None = None


@dataclass
class EncodingOptions(EncodingConfig):
    """Encoding analysis of the run on the z and c feature spaces (``brain2image encode`` adds
    z_c and U-Net features): every :class:`~brain2image.config.EncodingConfig` field, plus
    ``enabled``."""

    enabled: bool = True

    def analysis_config(self) -> EncodingConfig:
        """The :class:`~brain2image.config.EncodingConfig` part."""
        return EncodingConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(EncodingConfig)})


@dataclass
class RunConfig:
    """Everything a run needs; saved as ``run_config.json`` in the run folder.

    Parameters
    ----------
    nsd_root : str
        NSD root (the folder holding ``nsddata/``).
    out_dir : str
        Run folder.
    subject : int
    model : str
        ``bundled``, a diffusers hub id in the local cache, or a local diffusers folder.
    rois : list of str
        ROIs to prepare (``atlas:label``); must include the decoder ROIs.
    sessions : int or None
        Number of sessions (37 or 40 for NSD); ``None`` = all on disk.
    beta_format : str
        ``hdf5`` or ``nifti``.
    device, dtype : str
        Torch device and dtype of the LDM (``None`` dtype: fp32 on CPU, fp16 on CUDA).
    threads : int or None
        Torch CPU threads.
    report_images : int
        Test images shown in the report grid.
    """

    nsd_root: str
    out_dir: str
    subject: int = 1
    model: str = "bundled"
    rois: list[str] = field(default_factory=lambda: ["streams:early", "streams:ventral", "nsdgeneral"])
    sessions: int | None = None
    beta_format: str = "hdf5"
    device: str = "cpu"
    dtype: str | None = None
    threads: int | None = None
    report_images: int = 8
    features: FeatureConfig = field(default_factory=FeatureConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    reconstruction: ReconstructionConfig = field(
        default_factory=lambda: ReconstructionConfig(methods=("z_only", "c_only", "z_plus_c", "oracle")))
    evaluation: EvaluationOptions = field(default_factory=EvaluationOptions)
    encoding: EncodingOptions = field(default_factory=EncodingOptions)

    def to_dict(self) -> dict:
        """Plain-dict form (JSON-serialisable)."""
        return config_to_dict(self)


_SECTIONS = {"features": FeatureConfig, "decoder": DecoderConfig, "reconstruction": ReconstructionConfig,
             "evaluation": EvaluationOptions, "encoding": EncodingOptions}


def run_config_from_dict(values: dict, base_dir: Path | None = None) -> RunConfig:
    """Build a :class:`RunConfig` from nested dicts; relative paths are taken relative to
    ``base_dir`` (the config file's folder), never to the current directory."""
    values = dict(values)
    sections = {name: config_from_dict(cls, values.pop(name, {}) or {}) for name, cls in _SECTIONS.items()}
    for key in ("nsd_root", "out_dir"):
        if key not in values:
            raise DataFormatError(f"run config: missing required key {key!r}")
        path = Path(values[key]).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        values[key] = str(path)
    config = config_from_dict(RunConfig, values)
    return dataclasses.replace(config, **sections)


def load_run_config(path: str | os.PathLike) -> RunConfig:
    """Read a TOML run config (see ``examples/nsd_subj01_sd14.toml``)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"run config {path} not found")
    try:
        values = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise DataFormatError(f"{path}: not valid TOML ({error})") from None
    return run_config_from_dict(values, base_dir=path.resolve().parent)


class _StageTimer:
    """Times stages and keeps the record on disk, so resumed runs keep earlier timings."""

    def __init__(self, path: Path):
        self.path = path
        self.timings: dict[str, float] = json.loads(path.read_text()) if path.is_file() else {}

    def run(self, name: str, func: Callable[[], Any], done: bool = False) -> Any:
        if done:
            logger.info("stage %s: already done, skipped", name)
            return None
        logger.info("stage %s ...", name)
        start = time.perf_counter()
        result = func()
        self.timings[name] = round(time.perf_counter() - start, 2)
        atomic_write_text(self.path, json.dumps(self.timings, indent=2))
        return result


def _roi_key(spec: str) -> str:
    return spec.split(":")[-1]


def run_pipeline(config: RunConfig, *, progress: bool = True, timer_seed: dict[str, float] | None = None) -> Path:
    """Run (or resume) every stage of the method for one subject.

    Parameters
    ----------
    config : RunConfig
    progress : bool
        Progress bars.
    timer_seed : dict, optional
        Timings of stages run before (the demo's simulation), recorded with the others.

    Returns
    -------
    Path of the written ``report.html``.
    """
    import torch

    from .decoding import fit_decoder_from_files
    from .ldm.features import extract_features, feature_store_path, read_prepared_ids
    from .ldm.loading import load_ldm
    from .nsd.prepare import prepare_subject

    if config.threads:
        torch.set_num_threads(config.threads)
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / RUN_FILES["config"], json.dumps(config.to_dict(), indent=2))
    timer = _StageTimer(out / RUN_FILES["timings"])
    timer.timings.update(timer_seed or {})
    subject_tag = f"subj{config.subject:02d}"
    prepared = out / "prepared" / f"{subject_tag}.h5"
    timer.run("prepare", lambda: prepare_subject(
        config.nsd_root, config.subject, prepared, rois=tuple(config.rois), sessions=config.sessions,
        beta_format=config.beta_format, progress=progress), done=prepared.is_file())

    model = load_ldm(config.model, device=config.device, dtype=config.dtype)
    _check_run_model(out, config.model, model.fingerprint())
    stores = {name: feature_store_path(out / "features", "nsd", config.model, name) for name in ("z", "c")}
    ids = read_prepared_ids(prepared)
    for name, store in stores.items():
        timer.run(f"features_{name}", lambda name=name, store=store: extract_features(
            config.nsd_root, ids, model, name, store, config.features, progress=progress), done=store.is_file())

    decoders = {}
    for target, roi in (("z", config.decoder.z_roi), ("c", config.decoder.c_roi)):
        path = out / "decoders" / f"{subject_tag}_{target}_{roi}.h5"
        decoders[target] = path
        timer.run(f"fit_{target}", lambda target=target, roi=roi, path=path: fit_decoder_from_files(
            prepared, stores[target], roi, target, path, config.decoder), done=path.is_file())

    recon_dir = out / RUN_FILES["recon"]
    timer.run("reconstruct", lambda: _reconstruct(model, decoders, stores, recon_dir, config, progress))

    evaluation_path = out / RUN_FILES["evaluation"]
    timer.run("evaluate", lambda: _evaluate(recon_dir, config, evaluation_path))

    encoding_dir = out / RUN_FILES["encoding"]
    if config.encoding.enabled:
        timer.run("encode", lambda: _encode(prepared, stores, out, config),
                  done=(encoding_dir / "summary.json").is_file())

    metrics = _collect_metrics(evaluation_path, decoders, timer.timings, config)
    atomic_write_text(out / RUN_FILES["metrics"], json.dumps(metrics, indent=2))
    return build_report(out)


def _check_run_model(out: Path, name: str, fingerprint: str) -> None:
    """Record the run's model; refuse to resume a run folder made with other weights (its features,
    decoders and images would silently be reused)."""
    path = out / RUN_FILES["model"]
    record = {"model": name, "fingerprint": fingerprint}
    if path.is_file():
        previous = json.loads(path.read_text())
        if previous.get("fingerprint") != fingerprint:
            raise DataFormatError(
                f"{path}: this run folder was made with model {previous.get('model')!r} (fingerprint "
                f"{previous.get('fingerprint')}), now {name!r} has fingerprint {fingerprint}; expected the "
                f"same weights to resume. Use a new output folder or delete {out}")
    else:
        atomic_write_text(path, json.dumps(record, indent=2))


def _reconstruct(model, decoders: dict[str, Path], stores: dict[str, Path], recon_dir: Path,
                 config: RunConfig, progress: bool) -> Path:
    from .formats.feature_store import FeatureStore
    from .ldm.reconstruct import load_predictions, reconstruct

    z_ids, z_pred = load_predictions(decoders["z"])
    c_ids, c_pred = load_predictions(decoders["c"])
    if not np.array_equal(z_ids, c_ids):
        raise DataFormatError(f"{decoders['z']} and {decoders['c']} predict different test images")
    z_true = c_true = None
    if "oracle" in config.reconstruction.methods:
        z_true = FeatureStore.open(stores["z"]).read(z_ids)
        c_true = FeatureStore.open(stores["c"]).read(c_ids)
    return reconstruct(model, z_ids, z=z_pred, c=c_pred, config=config.reconstruction, out_dir=recon_dir,
                       progress=progress, z_true=z_true, c_true=c_true)


def _evaluate(recon_dir: Path, config: RunConfig, out: Path) -> dict:
    from .evaluation.evaluate import evaluate_recon_dir

    return evaluate_recon_dir(recon_dir, config.nsd_root, out, metrics=config.evaluation.metrics,
                              weights_dir=config.evaluation.weights_dir, device=config.device)


def _encode(prepared: Path, stores: dict[str, Path], run_dir: Path, config: RunConfig):
    from .encoding.analysis import run_encoding_analysis

    # Results go to <run_dir>/encoding/.
    return run_encoding_analysis(prepared, {k: str(v) for k, v in stores.items()}, run_dir,
                                 config=config.encoding.analysis_config())


def _decoding_summary(path: Path) -> dict[str, float]:
    import h5py

    with h5py.File(path, "r") as f:
        corr = np.asarray(f["test/corr"][()], dtype=np.float64)
        alphas = np.asarray(f["alphas"][()], dtype=np.float64)
        n_voxels = int(f["x_mean"].shape[0])
    finite = corr[np.isfinite(corr)]
    return {"n_voxels": n_voxels, "n_targets": int(corr.size), "mean_r": float(finite.mean()),
            "median_r": float(np.median(finite)), "frac_r_above_0.1": float((finite > 0.1).mean()),
            "median_alpha": float(np.median(alphas))}


def _collect_metrics(evaluation_path: Path, decoders: dict[str, Path], timings: dict[str, float],
                     config: RunConfig) -> dict:
    evaluation = json.loads(evaluation_path.read_text())
    metrics: dict[str, Any] = dict(evaluation["methods"])
    metrics["decoding"] = {f"{target} <- {path.stem.split('_', 2)[2]}": _decoding_summary(path)
                           for target, path in decoders.items()}
    metrics["timings_s"] = dict(timings)
    metrics["timings_s"]["total"] = round(sum(timings.values()), 2)
    metrics["feature_spaces"] = evaluation.get("feature_spaces")
    metrics["model"] = config.model
    metrics["brain2image_version"] = __version__
    return metrics


def build_report(run_dir: str | os.PathLike, *, n_images: int | None = None) -> Path:
    """Write ``report.html`` of a finished run folder (see the module docstring's layout)."""
    import pandas as pd

    from .evaluation.evaluate import load_real_images
    from .report import write_report

    run_dir = Path(run_dir)
    metrics_path = run_dir / RUN_FILES["metrics"]
    if not metrics_path.is_file():
        raise MissingFileError(f"{metrics_path} not found: run the pipeline (brain2image run / demo) first")
    metrics = json.loads(metrics_path.read_text())
    config = json.loads((run_dir / RUN_FILES["config"]).read_text())
    recon_dir = run_dir / RUN_FILES["recon"]
    index = pd.read_csv(recon_dir / "index.csv")
    n_images = config.get("report_images", 8) if n_images is None else n_images
    test_ids = np.unique(index.test_id.to_numpy())[:n_images]
    real_ids, real_images = load_real_images(config["nsd_root"], test_ids)
    seen = {int(i): img for i, img in zip(real_ids, real_images)}
    encoding_dir = run_dir / RUN_FILES["encoding"]
    encoding_summary, figures = None, []
    if (encoding_dir / "summary.json").is_file():
        encoding_summary = json.loads((encoding_dir / "summary.json").read_text())
        encoding_summary = encoding_summary.get("mean_r", encoding_summary)
        figures = sorted(encoding_dir.rglob("*.png"))
    methods = {k: v for k, v in metrics.items() if k in ("z_only", "c_only", "z_plus_c", "oracle")}
    notes = [f"Model: {config['model']}. NSD root: {config['nsd_root']}. Subject {config['subject']}.",
             f"Test images: {index.test_id.nunique()}; samples per image: "
             f"{int(index['sample'].max()) + 1}. Generated by brain2image {metrics.get('brain2image_version')}."]
    return write_report(run_dir / RUN_FILES["report"], title="brain2image: reconstructions from fMRI",
                        seen=seen, recon_index=index, recon_root=recon_dir, metrics=methods,
                        decoding=metrics.get("decoding", {}), config=config,
                        timings={k: v for k, v in metrics.get("timings_s", {}).items() if k != "total"},
                        encoding_summary=encoding_summary, encoding_figures=figures, notes=notes,
                        n_images=n_images)
