"""The evaluate stage: reconstructions + real images → the metric table (``metrics.json``).

For each method (``z_only``, ``c_only``, ``z_plus_c``, ``oracle``) with reconstructions of
shape (n_images, n_samples, H, W, 3):

- ``pixcorr``, ``ssim`` — on the first sample (k = 0), see :mod:`.metrics`;
- ``id_<space>`` — MindEye / Brain-Diffuser two-way identification on the first sample;
- ``takagi_<space>`` — Takagi & Nishimoto's identification over all samples;
- ``dist_<space>`` — mean correlation distance on the first sample (EffNet-B1, SwAV).

Feature spaces come from the registry of :mod:`.feature_spaces` (each a name, a reported
name, a kind and a loader): ``pixel`` (raw RGB pixels at the comparison size) and ``scene``
(the embedded world's scene evaluator, registered through the ``brain2image.feature_spaces``
entry point, reported as ``semantic``) for the embedded simulated study — ``EMBEDDED_SPACES``;
the real-image set ``FULL_SPACES`` = alexnet2, alexnet5, inception, clip (identification),
effnet, swav (distance). With AlexNet, Takagi's own AlexNet layers are added as
``takagi_alexnet_features5``, ``takagi_alexnet_features12`` and ``takagi_alexnet_classifier5``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .._io import atomic_write_text
from ..errors import DataFormatError, InvalidArgumentError, MissingFileError
from ..formats.recon_index import ReconFolder
from ..ldm.random_model import random_weights_marking, warn_if_random_on_real_data
from ..stats import pearson_matrix
from .feature_spaces import FeatureExtractor, FeatureSpace, LoadOptions, load_extractors, resolve_feature_spaces
from .identification import takagi_from_mean_corr, two_way_from_corr
from .metrics import DEFAULT_SIZE, comparison_size, correlation_distance, pixcorr, ssim

if TYPE_CHECKING:
    from ..sources import StimulusSource

__all__ = [
    "EMBEDDED_SPACES",
    "FULL_SPACES",
    "METRIC_SETS",
    "evaluate_reconstructions",
    "load_real_images",
    "evaluate_recon_dir",
]

logger = logging.getLogger(__name__)

EMBEDDED_SPACES = ("pixel", "scene")
FULL_SPACES = ("alexnet2", "alexnet5", "inception", "clip", "effnet", "swav")
METRIC_SETS = {"embedded": EMBEDDED_SPACES, "full": FULL_SPACES}


class _Accumulator:
    """Correlations of one feature space: r with sample 0 and the running mean over samples."""

    def __init__(self, real: np.ndarray):
        self.real = real
        self.first: np.ndarray | None = None
        self.total: np.ndarray | None = None
        self.count = 0

    def add(self, sample: np.ndarray) -> None:
        r = pearson_matrix(self.real, sample)
        if self.first is None:
            self.first = r
        self.total = r if self.total is None else self.total + r
        self.count += 1

    def two_way(self) -> float:
        if self.first is None:
            raise InvalidArgumentError("identification needs at least one sample")
        return float(np.mean(two_way_from_corr(self.first)))

    def takagi(self) -> float:
        if self.total is None:
            raise InvalidArgumentError("identification needs at least one sample")
        return float(np.mean(takagi_from_mean_corr(np.asarray(self.total / self.count))))


def _check_inputs(real_images: np.ndarray, recon_images: np.ndarray) -> None:
    if real_images.ndim != 4 or real_images.shape[-1] != 3 or real_images.dtype != np.uint8:
        raise DataFormatError(f"real images: expected uint8 array of shape (n_images, H, W, 3), "
                              f"got {real_images.dtype} {real_images.shape}")
    if recon_images.ndim != 5 or recon_images.shape[-1] != 3 or recon_images.dtype != np.uint8:
        raise DataFormatError(f"reconstructions: expected uint8 array of shape (n_images, n_samples, "
                              f"H, W, 3), got {recon_images.dtype} {recon_images.shape}")
    if len(real_images) != len(recon_images) or len(real_images) < 2:
        raise DataFormatError(f"{len(real_images)} real images and {len(recon_images)} reconstructions: "
                              f"need the same number, at least 2")


def _space_metrics(spaces: Sequence[FeatureSpace], extractors: Mapping[str, FeatureExtractor],
                   real_images: np.ndarray, recon_images: np.ndarray) -> dict[str, float]:
    """The metrics of every space (keys :attr:`FeatureSpace.metric_keys`, in order).

    Sample by sample, each sample's images go through every space before the next sample's, so
    that spaces reading one network share its forward pass. Distance spaces read sample 0 only.
    """
    real = {s.name: extractors[s.name].features(real_images) for s in spaces}
    accs = {s.name: _Accumulator(real[s.name]) for s in spaces if s.kind != "distance"}
    first: dict[str, np.ndarray] = {}
    for j in range(recon_images.shape[1]):
        sample = recon_images[:, j]
        for space in spaces:
            if space.kind != "distance":
                accs[space.name].add(extractors[space.name].features(sample))
            elif j == 0:
                first[space.name] = extractors[space.name].features(sample)
    out: dict[str, float] = {}
    for space in spaces:
        name = space.reported_name
        if space.kind == "distance":
            out[f"dist_{name}"] = correlation_distance(real[space.name], first[space.name])
        elif space.kind == "takagi":
            out[f"takagi_{name}"] = accs[space.name].takagi()
        else:
            out[f"id_{name}"], out[f"takagi_{name}"] = accs[space.name].two_way(), accs[space.name].takagi()
    return out


def evaluate_reconstructions(
    real_images: np.ndarray,
    recon_images: np.ndarray,
    feature_spaces: Sequence[str] = EMBEDDED_SPACES,
    *,
    size: int = DEFAULT_SIZE,
    extractors: Mapping[str, FeatureExtractor] | None = None,
    weights_dir: str | Path | None = None,
    device: str = "cpu",
    batch_size: int = 32,
) -> dict[str, float]:
    """Metric table of one method.

    Parameters
    ----------
    real_images : array of shape (n_images, height, width, 3), uint8
    recon_images : array of shape (n_images, n_samples, height', width', 3), uint8
        Sample 0 is the one-reconstruction table's reconstruction.
    feature_spaces : sequence of str
        Names of the feature-space registry
        (:func:`~brain2image.evaluation.feature_spaces.feature_space_names`); their companions
        (Takagi's AlexNet layers) are added.
    size : int
        PixCorr / SSIM / pixel-space comparison size (capped at the real images' size).
    extractors : mapping space name → FeatureExtractor, optional
        Preloaded extractors (e.g. a loaded scene evaluator, or networks with random weights
        from :func:`~brain2image.evaluation.feature_spaces.network_extractors`); the other
        spaces are loaded here from ``weights_dir`` / the local caches / their entry point.
    weights_dir : path, optional
    device : str
    batch_size : int
        Images per forward pass of the feature networks loaded here.

    Returns
    -------
    metrics : dict
        ``n_images``, ``n_samples``, ``pixcorr``, ``ssim`` and ``id_*``, ``takagi_*``,
        ``dist_*`` per feature space (see the module docstring).

    Raises
    ------
    InvalidArgumentError
        When a feature space is unknown (the message lists the known ones).
    DataFormatError
        When the image arrays are not as described.
    """
    real_images, recon_images = np.asarray(real_images), np.asarray(recon_images)
    _check_inputs(real_images, recon_images)
    spaces = resolve_feature_spaces(feature_spaces, device=device)
    first = recon_images[:, 0]
    out: dict[str, float] = {"n_images": int(recon_images.shape[0]), "n_samples": int(recon_images.shape[1]),
                             "pixcorr": pixcorr(real_images, first, size),
                             "ssim": ssim(real_images, first, size)}
    loaded = dict(extractors or {})
    options = LoadOptions(device=device, weights_dir=_optional_path(weights_dir), batch_size=batch_size,
                          image_size=comparison_size(real_images, size))
    loaded.update(load_extractors([s for s in spaces if s.name not in loaded], options))
    out.update(_space_metrics(spaces, loaded, real_images, recon_images))
    return out


def _optional_path(path: str | Path | None) -> Path | None:
    return None if path is None else Path(path)


def load_real_images(stimuli: StimulusSource, ids: Iterable[int]) -> tuple[np.ndarray, np.ndarray]:
    """The images the subject saw, through the run's stimuli (NSD: one sorted read of the brick).

    Parameters
    ----------
    stimuli : StimulusSource
        :func:`brain2image.sources.stimuli_of` the run's config.
    ids : iterable of int
        Image ids (NSD: 0-based 73k ids).

    Returns
    -------
    ids : array of shape (n_images,), int64, sorted unique
    images : array of shape (n_images, height, width, 3), uint8
    """
    ids = np.unique(np.asarray(list(ids), dtype=np.int64))
    return ids, stimuli.images(ids)


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image

    if not path.is_file():
        raise MissingFileError(f"{path} listed in index.csv not found")
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _recon_model(folder: ReconFolder) -> str | None:
    """The model named in the folder's ``config.json`` (``None`` without one)."""
    if not folder.config_path.is_file():
        return None
    try:
        model = json.loads(folder.config_path.read_text()).get("model")
    except json.JSONDecodeError as error:
        raise DataFormatError(f"{folder.config_path}: not valid JSON; expected the reconstruction settings") from error
    return None if model is None else str(model)


def evaluate_recon_dir(recon_dir: str | Path, stimuli: StimulusSource, out: str | Path,
                       metrics: str = "embedded", *, weights_dir: str | Path | None = None,
                       size: int = DEFAULT_SIZE, device: str = "cpu") -> dict:
    """Evaluate every method of a reconstruction folder and write ``metrics.json`` atomically.

    Parameters
    ----------
    recon_dir : path
        Holds ``index.csv`` (columns test_id, method, sample, seed, path).
    stimuli : StimulusSource
        The images the reconstructions are compared with (:func:`brain2image.sources.stimuli_of`).
    out : path
        The JSON to write.
    metrics : {"embedded", "full"}
        Feature-space set (:data:`METRIC_SETS`).
    weights_dir : path, optional
        Checkpoints of the feature networks (``full``).

    Returns
    -------
    result : dict
        What was written: ``methods`` (method → metrics), ``feature_spaces``, ``size``,
        ``recon_dir``, the stimuli's origin (NSD: ``nsd_root``), ``brain2image_version``; for
        reconstructions of a ``random:`` model also ``model``, ``weights`` (``"random weights"``) and,
        on real data, ``warnings``.
    """
    from .. import __version__

    if metrics not in METRIC_SETS:
        raise InvalidArgumentError(f"metrics must be one of {sorted(METRIC_SETS)}, got {metrics!r}")
    names = METRIC_SETS[metrics]
    spaces = resolve_feature_spaces(names, device=device)
    folder = ReconFolder(recon_dir)
    index = folder.read_index()
    model = _recon_model(folder)
    warn_if_random_on_real_data(model, stimuli)
    all_ids = sorted({i for per_id in index.values() for i in per_id})
    ids, real = load_real_images(stimuli, all_ids)
    row_of = {int(i): r for r, i in enumerate(ids)}
    # Loaded once for all methods (networks, the scene evaluator).
    extractors = load_extractors(spaces, LoadOptions(
        device=device, weights_dir=_optional_path(weights_dir), image_size=comparison_size(real, size)))
    results: dict[str, dict] = {}
    for method, per_id in index.items():
        test_ids = sorted(per_id)
        recon = np.stack([np.stack([_read_png(p) for p in per_id[i]]) for i in test_ids])
        logger.info("evaluating %s: %d images × %d samples", method, *recon.shape[:2])
        results[method] = evaluate_reconstructions(
            real[[row_of[i] for i in test_ids]], recon, names, size=size, extractors=extractors, device=device)
    result = {"methods": results, "metric_set": metrics, "feature_spaces": list(names), "size": size,
              "recon_dir": str(Path(recon_dir).resolve()), **stimuli.origin(),
              "brain2image_version": __version__}
    marking = random_weights_marking(model, stimuli)
    result.update({"model": model, **marking} if marking else {})
    atomic_write_text(out, json.dumps(result, indent=2))
    return result
