"""The evaluate stage: reconstructions + real images → the metric table (``metrics.json``).

For each method (``z_only``, ``c_only``, ``z_plus_c``, ``oracle``) with reconstructions of
shape (n_images, n_samples, H, W, 3):

- ``pixcorr``, ``ssim`` — on the first sample (k = 0), see :mod:`.metrics`;
- ``id_<space>`` — MindEye / Brain-Diffuser two-way identification on the first sample;
- ``takagi_<space>`` — Takagi & Nishimoto's identification over all samples;
- ``dist_<space>`` — mean correlation distance on the first sample (EffNet-B1, SwAV).

Feature spaces: ``pixel`` (raw RGB pixels at the comparison size) and ``scene`` (the bundled
scene evaluator's penultimate layer, reported as ``semantic``) for the embedded simulated
study — ``EMBEDDED_SPACES``; the real-image set ``FULL_SPACES`` = alexnet2, alexnet5,
inception, clip (identification), effnet, swav (distance). When AlexNet is loaded, Takagi's
own AlexNet layers are added as ``takagi_alexnet_features5``, ``takagi_alexnet_features12``
and ``takagi_alexnet_classifier5``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from .._io import atomic_write_text
from ..errors import DataFormatError, MissingFileError
from .feature_networks import FEATURE_SPACES, TAKAGI_SPACES, FeatureNetwork, load_feature_network
from .identification import pearson_matrix, takagi_from_mean_corr, two_way_from_corr
from .metrics import DEFAULT_SIZE, comparison_size, correlation_distance, pixcorr, resize_for_metrics, ssim

__all__ = [
    "EMBEDDED_SPACES",
    "FULL_SPACES",
    "METRIC_SETS",
    "INDEX_COLUMNS",
    "evaluate_reconstructions",
    "read_recon_index",
    "load_real_images",
    "evaluate_recon_dir",
]

logger = logging.getLogger(__name__)

EMBEDDED_SPACES = ("pixel", "scene")
FULL_SPACES = ("alexnet2", "alexnet5", "inception", "clip", "effnet", "swav")
METRIC_SETS = {"embedded": EMBEDDED_SPACES, "full": FULL_SPACES}
INDEX_COLUMNS = ("test_id", "method", "sample", "seed", "path")

_REPORTED_NAME = {"scene": "semantic"}


class _Accumulator:
    """Correlations of one feature space: r with sample 0 and the running mean over samples."""

    def __init__(self, real: np.ndarray):
        self.real = real
        self.first: np.ndarray | None = None
        self.first_features: np.ndarray | None = None
        self.total: np.ndarray | None = None
        self.count = 0

    def add(self, sample: np.ndarray, keep_features: bool = False) -> None:
        r = pearson_matrix(self.real, sample)
        if self.first is None:
            self.first = r
            if keep_features:
                self.first_features = sample
        self.total = r if self.total is None else self.total + r
        self.count += 1

    def two_way(self) -> float:
        return float(np.mean(two_way_from_corr(self.first)))

    def takagi(self) -> float:
        return float(np.mean(takagi_from_mean_corr(self.total / self.count)))


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


def evaluate_reconstructions(
    real_images: np.ndarray,
    recon_images: np.ndarray,
    feature_spaces: Sequence[str] = EMBEDDED_SPACES,
    *,
    size: int = DEFAULT_SIZE,
    scene_evaluator=None,
    networks: Mapping[str, FeatureNetwork] | None = None,
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
        From ``pixel``, ``scene`` and the keys of
        :data:`~brain2image.evaluation.feature_networks.FEATURE_SPACES`.
    size : int
        PixCorr / SSIM / pixel-space comparison size (capped at the real images' size).
    scene_evaluator : SceneEvaluator, optional
        Defaults to the bundled one when ``scene`` is requested.
    networks : mapping network name → FeatureNetwork, optional
        Preloaded networks (e.g. random ones in tests); others are loaded with
        :func:`load_feature_network` from ``weights_dir`` / the local caches.
    weights_dir : path, optional
    device : str
    batch_size : int

    Returns
    -------
    metrics : dict
        ``n_images``, ``n_samples``, ``pixcorr``, ``ssim`` and ``id_*``, ``takagi_*``,
        ``dist_*`` per feature space (see the module docstring).
    """
    real_images, recon_images = np.asarray(real_images), np.asarray(recon_images)
    _check_inputs(real_images, recon_images)
    unknown = [s for s in feature_spaces if s not in ("pixel", "scene") and s not in FEATURE_SPACES]
    if unknown:
        raise ValueError(f"unknown feature spaces {unknown}; expected pixel, scene or one of "
                         f"{sorted(FEATURE_SPACES)}")
    n, k = recon_images.shape[:2]
    first = recon_images[:, 0]
    out: dict[str, float] = {"n_images": int(n), "n_samples": int(k),
                             "pixcorr": pixcorr(real_images, first, size),
                             "ssim": ssim(real_images, first, size)}

    if "pixel" in feature_spaces:
        side = comparison_size(real_images, size)
        acc = _Accumulator(resize_for_metrics(real_images, side).reshape(n, -1))
        for j in range(k):
            acc.add(resize_for_metrics(recon_images[:, j], side).reshape(n, -1))
        out["id_pixel"], out["takagi_pixel"] = acc.two_way(), acc.takagi()

    if "scene" in feature_spaces:
        if scene_evaluator is None:
            from .scene_evaluator import SceneEvaluator

            scene_evaluator = SceneEvaluator.load(device=device)
        acc = _Accumulator(scene_evaluator.features(real_images))
        for j in range(k):
            acc.add(scene_evaluator.features(recon_images[:, j]))
        out["id_semantic"], out["takagi_semantic"] = acc.two_way(), acc.takagi()

    by_network: dict[str, list[str]] = {}
    for space in feature_spaces:
        if space in FEATURE_SPACES:
            by_network.setdefault(FEATURE_SPACES[space][0], []).append(space)
    for net_name, spaces in by_network.items():
        net = (networks or {}).get(net_name) or load_feature_network(
            net_name, weights_dir=weights_dir, device=device)
        # Nodes to follow over samples: the requested table spaces and Takagi's spaces of this net.
        follow: dict[str, str] = {s: FEATURE_SPACES[s][1] for s in spaces}
        follow.update({f"takagi:{t}": node for t, (nn_, node) in TAKAGI_SPACES.items()
                       if nn_ == net_name and t not in spaces})
        real_feats = net.extract(real_images, batch_size)
        accs = {key: _Accumulator(real_feats[node]) for key, node in follow.items()}
        del real_feats
        for j in range(k):
            sample_feats = net.extract(recon_images[:, j], batch_size)
            for key, node in follow.items():
                distance_space = key in FEATURE_SPACES and FEATURE_SPACES[key][2] == "distance"
                if distance_space and j > 0:
                    continue
                accs[key].add(sample_feats[node], keep_features=distance_space)
        for key, acc in accs.items():
            if key.startswith("takagi:"):
                out[f"takagi_{key.split(':', 1)[1]}"] = acc.takagi()
            elif FEATURE_SPACES[key][2] == "distance":
                out[f"dist_{key}"] = correlation_distance(acc.real, acc.first_features)
            else:
                out[f"id_{key}"], out[f"takagi_{key}"] = acc.two_way(), acc.takagi()
    return out


def read_recon_index(recon_dir: str | Path) -> dict[str, dict[int, list[Path]]]:
    """Read ``recon/index.csv``.

    Returns
    -------
    index : dict method → {test_id → list of PNG paths ordered by sample}

    Raises
    ------
    MissingFileError, DataFormatError
    """
    import pandas as pd

    recon_dir = Path(recon_dir)
    index_path = recon_dir / "index.csv"
    if not index_path.is_file():
        raise MissingFileError(f"{index_path} not found: run `brain2image reconstruct` first")
    table = pd.read_csv(index_path)
    missing = [c for c in INDEX_COLUMNS if c not in table.columns]
    if missing:
        raise DataFormatError(f"{index_path}: missing columns {missing}; expected {list(INDEX_COLUMNS)}")
    if table.empty:
        raise DataFormatError(f"{index_path}: no rows")
    out: dict[str, dict[int, list[Path]]] = {}
    for method, rows in table.groupby("method", sort=True):
        per_id: dict[int, list[Path]] = {}
        for test_id, group in rows.sort_values(["test_id", "sample"]).groupby("test_id", sort=True):
            paths = []
            for p in group["path"]:
                path = Path(p)
                if not path.is_absolute():
                    path = recon_dir / path
                paths.append(path)
            per_id[int(test_id)] = paths
        counts = {len(v) for v in per_id.values()}
        if len(counts) != 1:
            raise DataFormatError(f"{index_path}: method {method!r} has a varying number of samples "
                                  f"per test image ({sorted(counts)}); expected the same for all")
        out[str(method)] = per_id
    return out


def load_real_images(nsd_root: str | Path, ids: Iterable[int]) -> tuple[np.ndarray, np.ndarray]:
    """Read stimuli from ``nsd_stimuli.hdf5['imgBrick']`` (one sorted h5py read).

    Parameters
    ----------
    nsd_root : path
    ids : iterable of int
        0-based 73k ids.

    Returns
    -------
    ids : array of shape (n_images,), int64, sorted unique
    images : array of shape (n_images, height, width, 3), uint8
    """
    from ..ldm.images import read_stimuli, stimuli_path

    ids = np.unique(np.asarray(list(ids), dtype=np.int64))
    return ids, read_stimuli(stimuli_path(nsd_root), ids)


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image

    if not path.is_file():
        raise MissingFileError(f"{path} listed in index.csv not found")
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def evaluate_recon_dir(recon_dir: str | Path, nsd_root: str | Path, out: str | Path,
                       metrics: str = "embedded", *, weights_dir: str | Path | None = None,
                       size: int = DEFAULT_SIZE, device: str = "cpu") -> dict:
    """Evaluate every method of a reconstruction folder and write ``metrics.json`` atomically.

    Parameters
    ----------
    recon_dir : path
        Holds ``index.csv`` (columns test_id, method, sample, seed, path).
    nsd_root : path
        NSD root with ``nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5``.
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
        ``recon_dir``, ``nsd_root``, ``brain2image_version``.
    """
    from .. import __version__

    if metrics not in METRIC_SETS:
        raise ValueError(f"metrics must be one of {sorted(METRIC_SETS)}, got {metrics!r}")
    spaces = METRIC_SETS[metrics]
    index = read_recon_index(recon_dir)
    all_ids = sorted({i for per_id in index.values() for i in per_id})
    ids, real = load_real_images(nsd_root, all_ids)
    row_of = {int(i): r for r, i in enumerate(ids)}
    scene_evaluator = None
    if "scene" in spaces:
        from .scene_evaluator import SceneEvaluator

        scene_evaluator = SceneEvaluator.load(device=device)
    networks: dict[str, FeatureNetwork] = {}
    for space in spaces:
        if space in FEATURE_SPACES and FEATURE_SPACES[space][0] not in networks:
            name = FEATURE_SPACES[space][0]
            networks[name] = load_feature_network(name, weights_dir=weights_dir, device=device)
    results: dict[str, dict] = {}
    for method, per_id in index.items():
        test_ids = sorted(per_id)
        recon = np.stack([np.stack([_read_png(p) for p in per_id[i]]) for i in test_ids])
        logger.info("evaluating %s: %d images × %d samples", method, *recon.shape[:2])
        results[method] = evaluate_reconstructions(
            real[[row_of[i] for i in test_ids]], recon, spaces, size=size,
            scene_evaluator=scene_evaluator, networks=networks, device=device)
    result = {"methods": results, "metric_set": metrics, "feature_spaces": list(spaces), "size": size,
              "recon_dir": str(Path(recon_dir).resolve()), "nsd_root": str(Path(nsd_root).resolve()),
              "brain2image_version": __version__}
    atomic_write_text(out, json.dumps(result, indent=2))
    return result
