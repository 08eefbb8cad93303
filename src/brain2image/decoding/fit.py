"""Fit one decoder from files: prepared file + feature store in, decoder file out.

Steps of :func:`fit_decoder_from_files`: read the ROI's single training trials and
repeat-averaged test rows (:class:`~brain2image.formats.prepared.PreparedData`); align them to
the feature store by 73k id and read the needed feature rows once, in contiguous row blocks;
fit :class:`~brain2image.ridge.ImageRidgeCV` (targets once per image, rows mapped to images);
predict the test images and score each target by Pearson r
(:func:`~brain2image.stats.pearson_columns`); write the
:class:`~brain2image.formats.decoder_file.DecoderFile`.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ..config import DecoderConfig
from ..devices import device_scope
from ..errors import InvalidArgumentError, MissingFileError
from ..formats.decoder_file import DecoderFile
from ..formats.feature_store import FeatureStore
from ..formats.prepared import PreparedData
from ..formats.provenance import STUDY_KEY, require_same_study
from ..ridge import BackendLike, ImageRidgeCV, RidgeResult, backend_name
from ..ridge.backend import resolve_backend
from ..ridge.memory import decoder_target_chunk
from ..stats import pearson_columns
from .parts import part_attrs

__all__ = ["fit_decoder_from_files", "estimator_from_file"]

logger = logging.getLogger(__name__)

#: Feature-store attributes copied into the decoder file (``feature_attrs``).
_FEATURE_ATTRS = ("feature", "model", "resolution", "seed")


@dataclass
class _Features:
    """Test features and the alignment of the training trials to the feature store."""

    Y_test: np.ndarray           # (n_test, n_targets) float32, in the prepared file's test order
    train_images: np.ndarray     # (n_train_images,) sorted unique training 73k ids (rows of Y_train)
    row_image: np.ndarray        # (n_train_rows,) row of Y_train of each training trial
    target_shape: tuple[int, ...]  # of the fitted targets (flat for a part)
    part_marks: dict[str, Any]     # the part's attributes (parts.part_attrs); empty for every target
    attrs: dict[str, Any]        # provenance attributes of the store
    study: dict[str, Any]        # the study of the inputs (nsd_root, stimuli_identity), when recorded


def estimator_from_file(decoder: DecoderFile) -> ImageRidgeCV:
    """The fitted estimator stored in a decoder file read with ``load_weights=True``.

    It predicts in the file's target shape, multiplying the target blocks the fit solved (the
    attribute ``target_chunk``), so it reproduces ``test/pred``.

    Parameters
    ----------
    decoder : DecoderFile

    Returns
    -------
    ImageRidgeCV

    Raises
    ------
    InvalidArgumentError
        For a file read without its weights.
    """
    coef, intercept, x_mean, x_std = decoder.coef, decoder.intercept, decoder.x_mean, decoder.x_std
    if coef is None or intercept is None or x_mean is None or x_std is None:
        raise InvalidArgumentError(f"{decoder.path}: decoder file read without weights (field 'coef'); "
                                   "expected DecoderFile.read(..., load_weights=True)")
    config = decoder.config
    chunk = decoder.attrs.get("target_chunk", config.target_chunk)
    chunk = None if chunk is None or int(chunk) <= 0 else int(chunk)
    result: RidgeResult = {"coef": coef, "intercept": intercept, "alphas": decoder.alphas, "x_mean": x_mean,
                           "x_std": x_std, "cv_scores": decoder.cv_score}
    return ImageRidgeCV.from_fitted(result, decoder.target_shape, alphas=config.alphas, n_folds=config.cv_folds,
                                    target_chunk=chunk)


# ---------------------------------------------------------------------------------- inputs
def _read_prepared(path: Path, roi: str) -> dict[str, Any]:
    prepared = PreparedData(path)
    X_train, train_ids = prepared.train(roi)
    X_test, test_ids = prepared.test(roi)
    return {"train_ids": train_ids, "test_ids": test_ids, "X_train": X_train, "X_test": X_test,
            "subject": prepared.subject if "subject" in prepared.attrs else 0, "attrs": prepared.attrs}


def _study(prepared_path: Path, prepared_attrs: dict[str, Any], store_path: Path, store_attrs: dict[str, Any]
           ) -> dict[str, Any]:
    """The inputs' study (``stimuli_identity``, ``nsd_root``); refuses a store of another study."""
    require_same_study([(prepared_path, prepared_attrs), (store_path, store_attrs)])
    study = {key: attrs[key] for attrs in (store_attrs, prepared_attrs) for key in (STUDY_KEY,) if key in attrs}
    if "nsd_root" in prepared_attrs:
        study["nsd_root"] = str(prepared_attrs["nsd_root"])
    return study


def _read_features(store_path: Path, prepared_path: Path, train_ids: np.ndarray, test_ids: np.ndarray,
                   prepared_attrs: dict[str, Any], part: tuple[int, int] | None = None, chunk: int = 1
                   ) -> tuple[np.ndarray, _Features]:
    """Feature rows of every training image and every test image (only ``part``'s targets when given).

    Raises DataFormatError when the store's ``stimuli_identity`` differs from the prepared file's.

    Returns
    -------
    Y_train : float32 ndarray of shape (n_train_images, n_targets)
        Features of the sorted unique training ids.
    features : _Features
    """
    if not store_path.is_file():
        raise MissingFileError(f"feature store not found: {store_path}")
    store = FeatureStore.open(store_path)
    attrs = store.attrs
    study = _study(prepared_path, prepared_attrs, store_path, attrs)
    marks = {} if part is None else part_attrs(store.feature_shape, part, chunk)
    columns = (int(marks["part_columns"][0]), int(marks["part_columns"][1])) if marks else None
    train_images, row_image = np.unique(train_ids, return_inverse=True)
    Y_train = store.read_flat(train_images, needed_by=f"(training ids of prepared file {prepared_path})",
                              columns=columns)
    Y_test = store.read_flat(test_ids, needed_by=f"(test ids of prepared file {prepared_path})", columns=columns)
    shape = store.feature_shape if columns is None else (columns[1] - columns[0],)
    return Y_train, _Features(Y_test=Y_test, train_images=train_images, row_image=row_image.ravel(),
                              target_shape=shape, part_marks=marks,
                              attrs={k: attrs[k] for k in _FEATURE_ATTRS if k in attrs}, study=study)


# ---------------------------------------------------------------------------------- fit
def _json_value(value: Any) -> Any:
    """A store attribute as a JSON value (numpy scalars unwrapped, anything else as text)."""
    value = value.item() if hasattr(value, "item") else value
    return value if isinstance(value, (bool, int, float, str)) else str(value)


def _provenance(prep: dict[str, Any], features: _Features, ridge: ImageRidgeCV, *, roi: str, target: str,
                fit_seconds: float, prepared_path: Path, store_path: Path) -> dict[str, Any]:
    """Attributes of the decoder file that record how it was made (and which part of the targets)."""
    return {**features.part_marks, "alpha_grid": ridge.alpha_grid_, "roi": roi, "target": target,
            "subject": prep["subject"],
            "n_train_rows": len(features.row_image), "n_train_images": len(features.train_images),
            "fit_seconds": fit_seconds, "backend": backend_name(ridge.backend), "dtype": ridge.dtype,
            "target_chunk": -1 if ridge.target_chunk is None else int(ridge.target_chunk),
            "prepared_file": str(prepared_path.resolve()), "feature_store": str(store_path.resolve()),
            "feature_attrs": json.dumps({k: _json_value(v) for k, v in features.attrs.items()}), **features.study}


#: The steps of :func:`fit_decoder_from_files` its progress bar names (the ridge fit shows its own bars).
_PHASES = ("read the prepared file", "read the features", "fit the ridge", "predict and write")


def _next_phase(bar: tqdm) -> None:
    """Count the current step of ``bar`` as done and name the next one."""
    following = bar.n + 1
    bar.set_postfix_str(_PHASES[following] if following < len(_PHASES) else "done", refresh=False)
    bar.update()


def fit_decoder_from_files(prepared_path: str | os.PathLike, feature_store_path: str | os.PathLike, roi: str,
                           target_name: str, out_path: str | os.PathLike, config: DecoderConfig | None = None,
                           *, backend: BackendLike | None = None, dtype: str | None = None,
                           device: str = "cpu", progress: bool = False, part: tuple[int, int] | None = None
                           ) -> Path:
    """Fit one decoder from a prepared file and a feature store; write the decoder file.

    Parameters
    ----------
    prepared_path : path-like
        ``prepared_subjXX.h5``: ``/rois/<roi>/train`` (single trials, ``/train/ids``) and the
        repeat-averaged ``/rois/<roi>/test`` (``/test/ids``).
    feature_store_path : path-like
        Feature store HDF5 (``features`` (n_images, *target_shape), ``ids`` sorted). The rows
        needed are read once, as float32 (~2 GB for 9,000 images of c).
    roi : str
        ROI key of the prepared file (``"early"``, ``"ventral"``).
    target_name : str
        Name of the feature (``"z"``, ``"c"``), stored as an attribute.
    out_path : path-like
        Decoder file to write (atomically), usually ``decoders/`` + :meth:`DecoderFile.filename`.
    config : DecoderConfig, optional
        ``alphas``, ``cv_folds``, ``target_chunk``, ``backend`` and ``ridge_dtype`` are used; stored
        as JSON (the backend and target chunk the fit used are the attributes ``backend`` and
        ``target_chunk``).
    backend : str or module, optional
        himalaya backend, used explicitly; default ``config.backend`` (``"auto"``: ``torch_cuda``
        on a CUDA ``device``, else ``numpy``; :func:`~brain2image.ridge.backend.resolve_backend`).
    dtype : {"float32", "float64"}, optional
        Default ``config.ridge_dtype``.
    device : str
        The run's torch device: picks the ``auto`` backend; on ``torch_cuda`` the fit runs on it
        and an unset ``target_chunk`` is sized from its free memory (:mod:`brain2image.ridge.memory`).
    progress : bool
        Show a bar over the steps (reading, fitting, writing) and the ridge's bars over target chunks.
    part : (i, n), optional
        Fit only part ``i`` of ``n`` (1-based) of the targets, in blocks of ``target_chunk``
        (:func:`~brain2image.decoding.parts.target_part_columns`), and write it to ``out_path`` as
        a part file (its targets flattened, the part recorded in its attributes);
        :func:`~brain2image.decoding.parts.merge_decoder_parts` joins the parts into the decoder a
        fit without ``part`` writes. An empty part (no block left for it) is an
        :class:`~brain2image.errors.InvalidArgumentError`.

    Returns
    -------
    Path
        The decoder file (layout: :mod:`brain2image.formats.decoder_file`).
    """
    config = DecoderConfig() if config is None else config
    backend = resolve_backend(config.backend if backend is None else backend, device, option="[decoder] backend")
    dtype = config.ridge_dtype if dtype is None else dtype
    prepared_path, store_path = Path(prepared_path), Path(feature_store_path)
    bar = tqdm(total=len(_PHASES), desc=f"fit {target_name} from {roi}", unit="step", disable=not progress,
               bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]", postfix=_PHASES[0])
    prep = _read_prepared(prepared_path, roi)
    _next_phase(bar)
    Y_train, features = _read_features(store_path, prepared_path, prep["train_ids"], prep["test_ids"],
                                       prep["attrs"], part, config.target_chunk)
    _next_phase(bar)
    with device_scope(device):
        chunk = decoder_target_chunk(config.target_chunk, backend, n_rows=len(prep["X_train"]),
                                     n_images=len(Y_train), n_features=prep["X_train"].shape[1],
                                     n_targets=Y_train.shape[1], dtype=dtype)
        # A part of a decoder larger than one chunk solves its blocks as that decoder's fit does.
        whole = part is None or int(np.prod(json.loads(features.part_marks["full_target_shape"]))) <= chunk
        ridge = ImageRidgeCV(alphas=config.alphas, n_folds=config.cv_folds, target_chunk=chunk, backend=backend,
                             dtype=dtype, progress=progress, one_block_shortcut=whole)
        t0 = time.perf_counter()
        ridge.fit(prep["X_train"], Y_train, features.row_image)
        fit_seconds = time.perf_counter() - t0
    del Y_train
    _next_phase(bar)
    pred = ridge.predict(prep["X_test"])
    decoder = DecoderFile(
        test_ids=prep["test_ids"], test_pred=pred.reshape((len(pred),) + features.target_shape),
        test_corr=pearson_columns(features.Y_test, pred), alphas=ridge.alphas_, cv_score=ridge.cv_scores_,
        config=config, coef=ridge.coef_, intercept=ridge.intercept_, x_mean=ridge.x_mean_, x_std=ridge.x_std_,
        attrs=_provenance(prep, features, ridge, roi=roi, target=target_name, fit_seconds=fit_seconds,
                          prepared_path=prepared_path, store_path=store_path))
    logger.info("decoder %s from %s: %d train rows (%d images), %d voxels, %d targets, "
                "mean test r = %.3f, fit %.1f s", target_name, roi, len(features.row_image),
                len(features.train_images), ridge.coef_.shape[0], ridge.coef_.shape[1],
                decoder.summary()["mean_r"], fit_seconds)
    path = decoder.write(out_path)
    _next_phase(bar)
    bar.close()
    return path
