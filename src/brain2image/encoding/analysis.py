"""The encoding analysis: which LDM component explains which part of visual cortex (the fitting).

:func:`encode_arrays` fits in-memory arrays (what the demo calls); :func:`run_encoding_analysis`
reads a prepared file and feature stores, fits, and writes ``encoding/results.h5``,
``encoding/summary.json``, NIfTI / PNG maps and ROI bars
(:func:`~brain2image.encoding.outputs.write_encoding_outputs`: the writing side is
:mod:`brain2image.encoding.outputs`).

Both fit one model per feature space (:func:`fit_space_model`) and one banded model per partition
pair (:func:`fit_pair_model`, variance partitioning: :func:`pair_partition`) on one
:class:`EncodingProblem`; :mod:`brain2image.encoding.parts` runs the same fits one per task and
assembles the same files.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ..config import EncodingConfig
from ..devices import device_scope
from ..formats.encoding_results import EncodingModel
from ..formats.prepared import PreparedData
from ..ridge.backend import resolve_backend
from ..stats import pearson_columns
from .models import SpaceData, TrainDesign, fit_banded, fit_space, prepare_space, primal_weights, reduce_trials
from .noise_ceiling import nc_fraction, noise_ceiling, signed_r2
from .outputs import voxel_keys, write_encoding_outputs
from .partition import partition_variance

__all__ = ["EncodingConfig", "EncodingResults", "encode_arrays", "run_encoding_analysis", "default_pairs",
           "read_roi_data", "KEPT_MODELS", "analysis_pairs", "spaces_in_pairs", "EncodingProblem", "encoding_problem",
           "SpaceFit", "fit_space_model", "fit_pair_model", "pair_partition", "roi_image_ids", "read_features",
           "roi_problem"]

#: Feature spaces whose fitted model :func:`run_encoding_analysis` keeps in ``results.h5`` (to
#: predict responses to new images: the ``brain_correlation`` stage).
KEPT_MODELS = ("z",)

logger = logging.getLogger(__name__)


@dataclass
class EncodingResults:
    """Per-voxel results.

    Attributes
    ----------
    spaces : dict name -> dict of arrays of shape (n_voxels,)
        ``r`` (test Pearson r), ``r2`` (signed r·|r|), ``alpha``, and ``nc_fraction`` when a
        noise ceiling is known.
    partitions : dict "a|b" -> dict of arrays of shape (n_voxels,)
        Output of :func:`partition_variance` plus ``r_joint`` and the joint model's kernel
        weights ``weight_a``, ``weight_b``.
    noise_ceiling : array of shape (n_voxels,) or None
        Percent of explainable variance of the test averages.
    models : dict name -> EncodingModel
        The fitted models of the spaces asked for (``keep_models`` of :func:`encode_arrays`).
    """

    spaces: dict[str, dict[str, np.ndarray]]
    partitions: dict[str, dict[str, np.ndarray]]
    noise_ceiling: np.ndarray | None = None
    models: dict[str, EncodingModel] = field(default_factory=dict)


def default_pairs(names: Sequence[str]) -> list[tuple[str, str]]:
    """(z, c) when both exist, then consecutive ``zc_<strength>`` levels in strength order."""
    pairs = []
    if "z" in names and "c" in names:
        pairs.append(("z", "c"))
    levels = sorted((float(m.group(1)), n) for n in names if (m := re.fullmatch(r"zc_([0-9.]+)", n)))
    pairs += [(a[1], b[1]) for a, b in zip(levels, levels[1:])]
    return pairs


def _space_pair(pair: Sequence[str], names: Sequence[str]) -> tuple[str, str]:
    """A partition pair checked against the feature spaces' ``names``."""
    if len(pair) != 2 or any(n not in names for n in pair):
        raise ValueError(f"partition pair {list(pair)} names spaces not in {list(names)}")
    return str(pair[0]), str(pair[1])


def _kept_model(features: np.ndarray, space: SpaceData, design: TrainDesign, coef: np.ndarray,
                keys: np.ndarray) -> EncodingModel:
    """The fitted model of one space as weights on its standardised features."""
    assert space.mean is not None
    return EncodingModel(weights=primal_weights(features, space, design, coef), intercept=design.y_offset,
                         feature_mean=space.mean, feature_scale=space.scale, voxel_keys=keys,
                         feature_shape=tuple(int(n) for n in np.shape(features)[1:]), form=space.kind)


def analysis_pairs(names: Sequence[str], config: EncodingConfig,
                   partition_pairs: Sequence[Sequence[str]] | None = None) -> list[tuple[str, str]]:
    """The partition pairs of an analysis of the feature spaces ``names``, checked against them.

    Parameters
    ----------
    names : sequence of str
        The feature spaces, in order.
    config : EncodingConfig
        ``config.partition_pairs`` when set, else :func:`default_pairs` of ``names``.
    partition_pairs : sequence of (str, str), optional
        Overrides ``config.partition_pairs``.

    Returns
    -------
    list of (str, str)

    Raises
    ------
    ValueError
        For a pair naming a space not in ``names``.
    """
    if partition_pairs is None:
        partition_pairs = config.partition_pairs if config.partition_pairs is not None else default_pairs(names)
    return [_space_pair(p, names) for p in partition_pairs or ()]


def spaces_in_pairs(pairs: Sequence[tuple[str, str]]) -> set[str]:
    """The feature spaces that enter a banded model: they are built as kernels for their own fit too."""
    return {n for pair in pairs for n in pair}


@dataclass
class EncodingProblem:
    """What every model of one analysis is fitted to and scored on (:func:`encoding_problem`).

    Attributes
    ----------
    design : TrainDesign
        The training trials reduced to unique images.
    test_index : array of shape (n_test,)
        Feature row of each test image.
    Y_test : array of shape (n_test, n_voxels), float32
        Repeat-averaged test responses.
    noise_ceiling : array of shape (n_voxels,) or None
        Percent of explainable variance of the test averages.
    voxel_keys : array of shape (n_voxels,), int64
        Position key of each voxel (kept with the models).
    config : EncodingConfig
    device : str
        The run's torch device (``device_scope`` of every fit).
    fit_kw : dict
        Keywords of :func:`~brain2image.encoding.models.fit_space` and ``fit_banded`` (alphas,
        folds, seed, target chunk, the resolved backend).
    """

    design: TrainDesign
    test_index: np.ndarray
    Y_test: np.ndarray
    noise_ceiling: np.ndarray | None
    voxel_keys: np.ndarray
    config: EncodingConfig
    device: str
    fit_kw: dict[str, Any]

    def prepare(self, features: np.ndarray, kernel: bool | None = None) -> SpaceData:
        """One feature space standardised for ridge (:func:`~brain2image.encoding.models.prepare_space`)."""
        return prepare_space(features, self.design, self.test_index, kernel=kernel)


def encoding_problem(train_index: np.ndarray, Y_train: np.ndarray, test_index: np.ndarray, Y_test: np.ndarray, *,
                     ncsnr: np.ndarray | None = None, n_test_repeats: float | np.ndarray = 3,
                     config: EncodingConfig | None = None, device: str = "cpu",
                     voxel_keys: np.ndarray | None = None) -> EncodingProblem:
    """Reduce the training trials and settle what every model of the analysis shares.

    Parameters
    ----------
    train_index, Y_train, test_index, Y_test, ncsnr, n_test_repeats, config, device, voxel_keys
        As for :func:`encode_arrays`.

    Returns
    -------
    EncodingProblem

    Raises
    ------
    ValueError
        When ``Y_test`` does not have one row per test image and one column per voxel of ``Y_train``.
    """
    config = config or EncodingConfig()
    Y_test = np.asarray(Y_test, dtype=np.float32)
    if Y_test.shape[1] != np.shape(Y_train)[1] or len(Y_test) != len(test_index):
        raise ValueError(f"Y_test has shape {Y_test.shape}; expected ({len(test_index)}, {np.shape(Y_train)[1]})")
    fit_kw: dict[str, Any] = dict(alphas=config.alphas, n_folds=config.cv_folds, random_state=config.seed,
                                  target_chunk=config.target_chunk,
                                  backend=resolve_backend(config.backend, device, option="[encoding] backend"))
    keys = np.arange(Y_test.shape[1], dtype=np.int64) if voxel_keys is None else np.asarray(voxel_keys, np.int64)
    return EncodingProblem(design=reduce_trials(train_index, Y_train), test_index=test_index, Y_test=Y_test,
                           noise_ceiling=None if ncsnr is None else noise_ceiling(ncsnr, n_test_repeats),
                           voxel_keys=keys, config=config, device=device, fit_kw=fit_kw)


@dataclass
class SpaceFit:
    """One feature space's fitted model (:func:`fit_space_model`).

    Attributes
    ----------
    scores : dict name -> array of shape (n_voxels,)
        ``r``, ``r2``, ``alpha`` and, with a noise ceiling, ``nc_fraction``
        (:attr:`EncodingResults.spaces` of the space).
    space : SpaceData
        The prepared features (the kernels a banded model of a pair reuses).
    model : EncodingModel or None
        The fitted model, when it was asked to be kept.
    """

    scores: dict[str, np.ndarray]
    space: SpaceData
    model: EncodingModel | None = None


def fit_space_model(features: np.ndarray, problem: EncodingProblem, *, name: str = "",
                    kernel: bool | None = None, keep_model: bool = False) -> SpaceFit:
    """Fit one feature space to every voxel and score it on the test images.

    Parameters
    ----------
    features : array of shape (n_images, ...)
        The space's features of every image (rows as ``problem`` indexes them).
    problem : EncodingProblem
    name : str
        The space's name (for the log).
    kernel : bool, optional
        The form :func:`~brain2image.encoding.models.prepare_space` builds: ``True`` for a space
        that enters a partition pair (:func:`spaces_in_pairs`; the same fit then gives the
        kernels of the banded model), ``None`` to let the feature count decide.
    keep_model : bool
        Also return the fitted model (its weights on the standardised features).

    Returns
    -------
    SpaceFit
    """
    space = problem.prepare(features, kernel=kernel)
    model = None
    with device_scope(problem.device):
        if keep_model:
            pred, alphas, coef = fit_space(space, problem.design, return_coef=True, **problem.fit_kw)
            model = _kept_model(features, space, problem.design, coef, problem.voxel_keys)
        else:
            pred, alphas = fit_space(space, problem.design, **problem.fit_kw)
    r = pearson_columns(problem.Y_test, pred, fill=0.0)
    scores = {"r": r, "r2": signed_r2(r), "alpha": alphas.astype(np.float64)}
    if problem.noise_ceiling is not None:
        scores["nc_fraction"] = nc_fraction(r, problem.noise_ceiling)
    logger.info("encoding %s (%s, %d features): mean r %.3f", name, space.kind, space.n_features, r.mean())
    return SpaceFit(scores=scores, space=space, model=model)


def fit_pair_model(space_a: SpaceData, space_b: SpaceData, problem: EncodingProblem) -> dict[str, np.ndarray]:
    """Fit the banded ridge model of a pair of feature spaces and score it on the test images.

    Parameters
    ----------
    space_a, space_b : SpaceData
        The two spaces in kernel form (``problem.prepare(features, kernel=True)``, or the
        :attr:`SpaceFit.space` of their own fits).
    problem : EncodingProblem

    Returns
    -------
    dict name -> array of shape (n_voxels,)
        ``r_joint`` (test Pearson r of the joint model) and the kernel weights ``weight_a``,
        ``weight_b`` of each voxel's chosen model.
    """
    with device_scope(problem.device):
        pred, weights = fit_banded([space_a, space_b], problem.design, n_iter=problem.config.banded_n_iter,
                                   **problem.fit_kw)
    return {"r_joint": pearson_columns(problem.Y_test, pred, fill=0.0), "weight_a": weights[0],
            "weight_b": weights[1]}


def pair_partition(key: str, r_a: np.ndarray, r_b: np.ndarray, joint: Mapping[str, np.ndarray]
                   ) -> dict[str, np.ndarray]:
    """The partition of a pair: :func:`partition_variance` plus the joint model's ``r_joint`` and weights.

    Parameters
    ----------
    key : str
        ``"a|b"`` (for the log).
    r_a, r_b : arrays of shape (n_voxels,)
        Test r of the single-space models.
    joint : mapping
        What :func:`fit_pair_model` returned.

    Returns
    -------
    dict name -> array of shape (n_voxels,)
        :attr:`EncodingResults.partitions` of the pair.
    """
    part = partition_variance(r_a, r_b, joint["r_joint"])
    part.update(r_joint=joint["r_joint"], weight_a=joint["weight_a"], weight_b=joint["weight_b"])
    a, b = key.split("|")
    logger.info("partition %s: mean unique %s %.4f, unique %s %.4f, shared %.4f", key, a,
                part["unique_a"].mean(), b, part["unique_b"].mean(), part["shared"].mean())
    return part


def encode_arrays(features: Mapping[str, np.ndarray], train_index: np.ndarray, Y_train: np.ndarray,
                  test_index: np.ndarray, Y_test: np.ndarray, *, ncsnr: np.ndarray | None = None,
                  n_test_repeats: float | np.ndarray = 3, config: EncodingConfig | None = None,
                  partition_pairs: Sequence[Sequence[str]] | None = None, device: str = "cpu",
                  progress: bool = False, keep_models: Collection[str] = (),
                  voxel_keys: np.ndarray | None = None) -> EncodingResults:
    """Fit every feature space to every voxel and partition variance between pairs.

    One :func:`fit_space_model` per space, then one :func:`fit_pair_model` per pair (reusing
    the spaces' kernels); :mod:`brain2image.encoding.parts` runs the same fits one per task.

    Parameters
    ----------
    features : mapping name -> array of shape (n_images, ...)
        Features of every image, one array per space (rows shared across spaces).
    train_index : array of shape (n_trials,)
        Feature row of each training trial (repeated images repeat their row).
    Y_train : array of shape (n_trials, n_voxels)
        Single-trial responses.
    test_index : array of shape (n_test,)
        Feature row of each test image.
    Y_test : array of shape (n_test, n_voxels)
        Repeat-averaged test responses.
    ncsnr : array of shape (n_voxels,), optional
        Gives the noise ceiling and ``nc_fraction``.
    n_test_repeats : float or array of shape (n_test,)
        Trials averaged per test image (for the noise ceiling).
    config : EncodingConfig, optional
    partition_pairs : sequence of (str, str), optional
        Overrides ``config.partition_pairs``.
    device : str
        The run's torch device: ``config.backend = "auto"`` fits on ``torch_cuda`` there when it is
        a CUDA device, else on ``numpy`` (:func:`~brain2image.ridge.backend.resolve_backend`).
    progress : bool
        Show a bar over the models (one per feature space, one per partitioned pair).
    keep_models : collection of str
        Feature spaces whose fitted model is returned too (``EncodingResults.models``; names not
        in ``features`` are ignored). The fit is the same; only the weights are kept.
    voxel_keys : array of shape (n_voxels,), optional
        Position key of each voxel, kept with the models (default: the column index).

    Returns
    -------
    EncodingResults
    """
    problem = encoding_problem(train_index, Y_train, test_index, Y_test, ncsnr=ncsnr, n_test_repeats=n_test_repeats,
                               config=config, device=device, voxel_keys=voxel_keys)
    names = list(features)
    pairs = analysis_pairs(names, problem.config, partition_pairs)
    in_pairs = spaces_in_pairs(pairs)
    models: dict[str, EncodingModel] = {}
    spaces: dict[str, dict[str, np.ndarray]] = {}
    kernels: dict[str, SpaceData] = {}
    bar = tqdm(total=len(names) + len(pairs), desc="encoding models", unit="model", disable=not progress)
    for name in names:
        bar.set_postfix_str(name)
        # Spaces that enter a banded model are built as kernels once and reused there.
        fit = fit_space_model(features[name], problem, name=name, kernel=True if name in in_pairs else None,
                              keep_model=name in keep_models)
        spaces[name] = fit.scores
        if fit.model is not None:
            models[name] = fit.model
        if name in in_pairs:
            kernels[name] = fit.space
        bar.update()
    partitions = {}
    for a, b in pairs:
        key = f"{a}|{b}"
        bar.set_postfix_str(key)
        joint = fit_pair_model(kernels[a], kernels[b], problem)
        partitions[key] = pair_partition(key, spaces[a]["r"], spaces[b]["r"], joint)
        bar.update()
    bar.close()
    return EncodingResults(spaces=spaces, partitions=partitions, noise_ceiling=problem.noise_ceiling, models=models)


# ---------------------------------------------------------------------------------------- inputs
def read_roi_data(prepared_path: str | os.PathLike, roi: str) -> dict:
    """Read what the analysis needs of one ROI from a prepared file.

    Returns
    -------
    dict with ``train_ids`` (n_trials,), ``Y_train`` (n_trials, n_voxels), ``test_ids``
    (n_test,), ``Y_test`` (n_test, n_voxels), ``n_repeats`` (n_test,), ``ncsnr`` or None,
    ``ijk`` or None, ``vertex``/``hemi`` or None, ``volume_shape``, ``affine``, ``space`` and
    ``positions_placed`` (False for array betas whose columns have no place in a volume).
    """
    prepared = PreparedData(prepared_path)
    Y_train, train_ids = prepared.train(roi)
    Y_test, test_ids = prepared.test(roi)
    return {"train_ids": train_ids, "Y_train": Y_train, "test_ids": test_ids, "Y_test": Y_test,
            "n_repeats": prepared.n_repeats(), "ncsnr": prepared.ncsnr(roi), **prepared.positions(roi),
            "volume_shape": prepared.volume_shape, "affine": prepared.affine,
            "space": str(prepared.attrs.get("space", "")),
            "positions_placed": bool(prepared.attrs.get("positions_placed", True))}


def roi_image_ids(data: Mapping[str, np.ndarray]) -> np.ndarray:
    """The sorted 73k ids of every train and test image of :func:`read_roi_data`'s ``data`` (the feature rows)."""
    return np.unique(np.concatenate([data["train_ids"], data["test_ids"]]))


def read_features(feature_stores: Mapping[str, str | os.PathLike], ids: np.ndarray, *,
                  progress: bool = False) -> dict[str, np.ndarray]:
    """The rows of ``ids`` of each feature store.

    Parameters
    ----------
    feature_stores : mapping name -> path-like
        Finished feature stores holding every id of ``ids``.
    ids : array of shape (n_images,)
        Sorted 73k ids (:func:`roi_image_ids`).
    progress : bool
        Show a bar over the stores.

    Returns
    -------
    dict name -> array of shape (n_images, ...)
    """
    from ..formats.feature_store import FeatureStore

    return {name: FeatureStore.open(path).read(ids) for name, path in
            tqdm(feature_stores.items(), desc="read feature stores", unit="store", disable=not progress)}


def roi_problem(data: Mapping[str, Any], config: EncodingConfig, device: str = "cpu") -> EncodingProblem:
    """The :class:`EncodingProblem` of one ROI read by :func:`read_roi_data` (feature rows: :func:`roi_image_ids`).

    Parameters
    ----------
    data : mapping
        What :func:`read_roi_data` returned.
    config : EncodingConfig
    device : str
        The run's torch device.

    Returns
    -------
    EncodingProblem
    """
    ids = roi_image_ids(data)
    return encoding_problem(np.searchsorted(ids, data["train_ids"]), data["Y_train"],
                            np.searchsorted(ids, data["test_ids"]), data["Y_test"], ncsnr=data["ncsnr"],
                            n_test_repeats=data["n_repeats"], config=config, device=device,
                            voxel_keys=voxel_keys(data))


def run_encoding_analysis(prepared_path: str | os.PathLike, feature_stores: Mapping[str, str | os.PathLike],
                          out_dir: str | os.PathLike, rois: str | None = None,
                          config: EncodingConfig | None = None, device: str = "cpu",
                          progress: bool = False) -> EncodingResults:
    """Fit encoding models of each feature store to the ROI's voxels and write results and maps.

    Parameters
    ----------
    prepared_path : path-like
        ``prepared_subjXX.h5``.
    feature_stores : mapping name -> path-like
        Finished feature stores (``z``, ``c``, ``zc_0.5``, ``unet_...``); each must hold every
        train and test id of the prepared file.
    out_dir : path-like
        Results go to ``<out_dir>/encoding/``.
    rois : str, optional
        ROI key to model (default ``config.roi``).
    config : EncodingConfig, optional
    device : str
        The run's torch device (picks the ``auto`` backend; see :func:`encode_arrays`).
    progress : bool
        Show bars over the feature stores read and the models fitted.

    Returns
    -------
    EncodingResults
    """
    config = dataclasses.replace(config or EncodingConfig())
    if rois is not None:
        config.roi = rois
    prepared_path = Path(prepared_path)
    data = read_roi_data(prepared_path, config.roi)
    ids = roi_image_ids(data)
    features = read_features(feature_stores, ids, progress=progress)
    results = encode_arrays(features, np.searchsorted(ids, data["train_ids"]), data["Y_train"],
                            np.searchsorted(ids, data["test_ids"]), data["Y_test"], ncsnr=data["ncsnr"],
                            n_test_repeats=data["n_repeats"], config=config, device=device, progress=progress,
                            keep_models=KEPT_MODELS, voxel_keys=voxel_keys(data))
    write_encoding_outputs(results, prepared_path, feature_stores, out_dir, config, data)
    return results
