"""The decoders of a transfer run: own (first k sessions), transfer through references, or both.

:func:`transfer_decoders` makes the split (:mod:`.split`), then per decoder target: the new
subject's own ridge decoder on its kept trials, and/or one alignment map per reference
(:mod:`.alignment`) composed with that reference's full-data decoder and combined; it predicts the
held-out test images and writes an ordinary decoder file (``x_mean = 0``, ``x_std = 1``: the
weights act on raw betas), so reconstruct, evaluate and the report read it unchanged. The method
and the split are recorded in each file (``decoder_method``, ``transfer``) and in
``transfer/split.json``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..config import DecoderConfig
from ..devices import device_scope
from ..errors import DataFormatError
from ..formats.decoder_file import DecoderFile
from ..formats.feature_store import FeatureStore
from ..formats.prepared import PreparedData
from ..formats.provenance import STUDY_KEY, require_same_study
from ..ridge import BackendLike, ImageRidgeCV
from ..ridge.backend import resolve_backend
from ..stats import pearson_columns
from .alignment import AlignmentMap, RawDecoder, combine, compose, fit_alignment, from_standardised
from .settings import TransferSettings, session_count
from .split import ReferenceSubject, TransferSplit, image_means, make_split, read_rows

__all__ = ["TransferResult", "transfer_decoders", "reference_rows"]

logger = logging.getLogger(__name__)

#: Alignment maps fitted so far, by (reference label, ROI): the map and the new subject's image ids it saw.
_AlignmentCache = dict[tuple[str, str], tuple[AlignmentMap, np.ndarray]]


@dataclass
class TransferResult:
    """What :func:`transfer_decoders` wrote: the decoder file of each target, the split, per-target figures."""

    decoders: dict[str, Path]
    split: TransferSplit
    figures: dict[str, dict[str, Any]] = field(default_factory=dict)


def reference_rows(reference: ReferenceSubject, roi: str) -> tuple[np.ndarray, np.ndarray]:
    """A reference's image-averaged ROI betas of every image it saw: (stimulus keys, means)."""
    prepared = PreparedData(reference.prepared)
    X_train, train_ids = prepared.train(roi)
    ids_train, means_train = image_means(X_train, train_ids)
    del X_train
    X_test, test_ids = prepared.test(roi)
    ids = np.concatenate([ids_train, test_ids])
    return prepared.stimulus_keys(ids), np.concatenate([means_train, X_test])


@dataclass
class _NewSubject:
    """The new subject's data for one ROI: kept trials, their image means and keys, test rows."""

    X_rows: np.ndarray
    row_ids: np.ndarray
    image_ids: np.ndarray
    image_means: np.ndarray
    image_keys: np.ndarray
    X_test: np.ndarray


def _new_subject(prepared: PreparedData, roi: str, split: TransferSplit) -> _NewSubject:
    X_rows, row_ids = read_rows(prepared, roi, split.own_rows)
    ids, means = image_means(X_rows, row_ids)
    X_test_all, test_ids = prepared.test(roi)
    X_test = X_test_all[np.searchsorted(test_ids, split.test_ids)]
    return _NewSubject(X_rows, row_ids, ids, means, prepared.stimulus_keys(ids), X_test)


def _alignment_images(new: _NewSubject, ref_keys: np.ndarray, limit: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the new subject's image means and of the reference's that hold the same images (capped, seeded)."""
    position = {key: i for i, key in enumerate(ref_keys.tolist())}
    new_rows = np.asarray([i for i, key in enumerate(new.image_keys.tolist()) if key in position], np.int64)
    if limit and len(new_rows) > limit:
        new_rows = np.sort(np.random.default_rng(seed).choice(new_rows, size=limit, replace=False))
    ref_rows = np.asarray([position[key] for key in new.image_keys[new_rows].tolist()], np.int64)
    return new_rows, ref_rows


def _reference_decoder(reference: ReferenceSubject, target: str, roi: str, shape: tuple[int, ...],
                       store_attrs: Mapping[str, Any]) -> DecoderFile:
    """A reference's full-data decoder of ``target``, checked to decode the same features from the same ROI."""
    path = reference.decoders[target]
    decoder = DecoderFile.read(path, load_weights=True)
    attrs = decoder.attrs
    if "part" in attrs:
        raise DataFormatError(f"{path}: a part of a decoder (attribute 'part'); expected a whole decoder "
                              "(brain2image merge joins the parts)")
    if str(attrs.get("target", target)) != target or str(attrs.get("roi", roi)) != roi:
        raise DataFormatError(f"{path}: attributes target/roi = {attrs.get('target')!r}/{attrs.get('roi')!r}; "
                              f"expected {target!r} decoded from {roi!r} as the new subject's")
    if decoder.target_shape != tuple(shape):
        raise DataFormatError(f"{path}: 'test/pred' targets of shape {decoder.target_shape}; expected {tuple(shape)}, "
                              "the new subject's feature store (fitted on other features)")
    theirs = json.loads(str(attrs.get("feature_attrs", "{}")))
    for key in ("model", "resolution"):
        if key in theirs and key in store_attrs and str(theirs[key]) != str(store_attrs[key]):
            raise DataFormatError(f"{path}: fitted on features of {key} {theirs[key]!r}; expected {store_attrs[key]!r} "
                                  "as the new subject's feature store")
    return decoder


def _own_decoder(new: _NewSubject, store: FeatureStore, config: DecoderConfig, backend: BackendLike,
                 progress: bool) -> tuple[RawDecoder, ImageRidgeCV]:
    """The new subject's ridge decoder on its kept trials (alpha by image-grouped CV)."""
    Y = store.read_flat(new.image_ids, needed_by="(the new subject's kept trials)")
    row_image = np.searchsorted(new.image_ids, new.row_ids)
    ridge = ImageRidgeCV(alphas=config.alphas, n_folds=config.cv_folds, target_chunk=config.target_chunk,
                         backend=backend, dtype=config.ridge_dtype, progress=progress)
    ridge.fit(new.X_rows, Y, row_image)
    return from_standardised(ridge.coef_, ridge.intercept_, ridge.x_mean_, ridge.x_std_), ridge


def _alignment(new: _NewSubject, reference: ReferenceSubject, roi: str, settings: TransferSettings,
               config: DecoderConfig, backend: BackendLike, cache: _AlignmentCache, progress: bool) -> AlignmentMap:
    """The alignment map of ``reference`` from ``roi`` (fitted once per reference and ROI, then cached)."""
    key = (str(reference.label), roi)
    if key not in cache:
        ref_keys, ref_means = reference_rows(reference, roi)
        new_rows, ref_rows = _alignment_images(new, ref_keys, settings.alignment_images, settings.seed)
        if len(new_rows) < 3:
            raise DataFormatError(f"{reference.prepared}: shares {len(new_rows)} image(s) with the new subject's "
                                  f"first {settings.sessions} session(s); expected at least 3 to fit an alignment")
        cache[key] = (fit_alignment(new.image_means[new_rows], ref_means[ref_rows], config, backend=backend,
                                    progress=progress), new.image_ids[new_rows])
    return cache[key][0]


def _transfer_decoder(new: _NewSubject, references: Sequence[ReferenceSubject], target: str, roi: str,
                      store: FeatureStore, settings: TransferSettings, config: DecoderConfig, backend: BackendLike,
                      cache: _AlignmentCache, progress: bool) -> tuple[RawDecoder, dict[str, Any], list[np.ndarray]]:
    """Each reference's decoder through its alignment map, combined and calibrated; figures; the references' alphas.

    The alignment maps come first (their CV R^2 weighs the references); then each reference's
    decoder is read and composed into the combined decoder in turn, so memory holds the output and
    one reference decoder. The figures: ``references`` (per reference: alignment images, CV R^2,
    median alpha, weight) and ``calibration_scale`` (:func:`_calibrated`).
    """
    alignments = [_alignment(new, reference, roi, settings, config, backend, cache, progress)
                  for reference in references]
    r2 = np.asarray([max(a.cv_r2, 0.0) if np.isfinite(a.cv_r2) else 0.0 for a in alignments])
    weights = (r2 / r2.sum() if settings.combine == "weighted" and r2.sum() > 0
               else np.full(len(alignments), 1 / len(alignments)))
    combined: RawDecoder | None = None
    figures, alphas, spreads = {}, [], []
    for reference, alignment, weight in zip(references, alignments, weights):
        decoder = _reference_decoder(reference, target, roi, store.feature_shape, store.attrs)
        spreads.append(_spread(decoder.test_pred))
        stored = (decoder.coef, decoder.intercept, decoder.x_mean, decoder.x_std)
        assert all(w is not None for w in stored), "read with load_weights=True"
        combined = compose(alignment, *stored, weight=float(weight), into=combined)  # type: ignore[arg-type]
        alphas.append(np.asarray(decoder.alphas, np.float64))
        figures[str(reference.label)] = {"alignment_images": alignment.n_images, "alignment_cv_r2": alignment.cv_r2,
                                         "alignment_median_alpha": alignment.median_alpha, "weight": float(weight)}
        del decoder, stored
    assert combined is not None
    calibrated, scale = _calibrated(combined, new.image_means, spreads)
    return calibrated, {"references": figures, "calibration_scale": scale}, alphas


def _spread(pred: np.ndarray) -> float:
    """Root mean over targets of the variance over images of predictions (n_images, n_targets)."""
    return float(np.sqrt(np.mean(np.var(np.asarray(pred, np.float64).reshape(len(pred), -1), axis=0))))


def _calibrated(decoder: RawDecoder, X: np.ndarray, spreads: list[float]) -> tuple[RawDecoder, float]:
    """``decoder`` scaled about its mean so its predictions on ``X`` spread as the references' decoders' do.

    A reference decoder is fitted on raw voxels, but gets the alignment map's ridge predictions,
    which are shrunk: the composed predictions spread less than a decoder's (about two thirds on
    the simulated cohort), and the diffusion model then draws weaker images. One scale for every
    target, ``spread of the references' own test predictions / spread of these``, restores it
    (the correlations of each target are unchanged). Returns the decoder and the scale.
    """
    pred = decoder.predict(X)
    own = _spread(pred)
    scale = float(np.mean(spreads)) / own if own > 0 else 1.0
    mean = pred.mean(axis=0, dtype=np.float64)
    intercept = scale * np.asarray(decoder.intercept, np.float64) + (1 - scale) * mean
    coef = decoder.coef
    coef *= np.float32(scale)  # in place: the combined decoder is this function's alone
    return RawDecoder(coef, intercept.astype(np.float32)), scale


def _study(prepared: PreparedData, store: FeatureStore) -> dict[str, Any]:
    """The inputs' study attributes (as a fitted decoder records them); refuses a store of another study."""
    require_same_study([(prepared.path, prepared.attrs), (store.path, store.attrs)])
    study = {STUDY_KEY: attrs[STUDY_KEY] for attrs in (store.attrs, prepared.attrs) if STUDY_KEY in attrs}
    if "nsd_root" in prepared.attrs:
        study["nsd_root"] = str(prepared.attrs["nsd_root"])
    return study



def _one_target(new_prepared: PreparedData, target: str, roi: str, store_path: Path, out: Path,
                references: Sequence[ReferenceSubject], split: TransferSplit, settings: TransferSettings,
                config: DecoderConfig, backend: BackendLike, cache: dict, progress: bool) -> dict[str, Any]:
    """Fit, predict and write the decoder file of one target; its figures."""
    store = FeatureStore.open(store_path)
    study = _study(new_prepared, store)
    new = _new_subject(new_prepared, roi, split)
    t0 = time.perf_counter()
    decoders, alphas, figures = [], [], {}
    cv = np.full(int(np.prod(store.feature_shape)), np.nan)
    if settings.decoder in ("own", "transfer+own"):
        own, ridge = _own_decoder(new, store, config, backend, progress)
        decoders.append(own)
        alphas.append(np.asarray(ridge.alphas_, np.float64))
        cv = np.asarray(ridge.cv_scores_, np.float64)
        figures["own"] = {"trials": len(new.row_ids), "images": len(new.image_ids),
                          "median_alpha": float(np.median(ridge.alphas_))}
    if settings.decoder in ("transfer", "transfer+own"):
        through, transfer_figures, ref_alphas = _transfer_decoder(
            new, references, target, roi, store, settings, config, backend, cache, progress)
        figures.update(transfer_figures)
        decoders.append(through)
        alphas.append(np.exp(np.mean(np.log(ref_alphas), axis=0)))
    decoder = combine(decoders)
    pred = decoder.predict(new.X_test)
    Y_test = store.read_flat(split.test_ids, needed_by="(the held-out test images)")
    record = {"decoder": settings.decoder, "sessions": split.sessions, "n_sessions": split.n_sessions,
              "reference_subjects": [str(r.label) for r in references], "reference_run": settings.reference_run,
              "alignment": settings.alignment, "combine": settings.combine, "test_fraction": settings.test_fraction,
              "alignment_images": settings.alignment_images, "seed": settings.seed,
              "n_test_images": len(split.test_ids), **figures}
    n_voxels = decoder.coef.shape[0]
    file = DecoderFile(
        test_ids=split.test_ids, test_pred=pred.reshape((len(pred),) + tuple(store.feature_shape)),
        test_corr=pearson_columns(Y_test, pred), alphas=np.exp(np.mean(np.log(alphas), axis=0)), cv_score=cv,
        config=config, coef=decoder.coef, intercept=decoder.intercept, x_mean=np.zeros(n_voxels),
        x_std=np.ones(n_voxels),
        attrs={"roi": roi, "target": target, "subject": new_prepared.subject, "decoder_method": settings.decoder,
               "transfer": json.dumps(record), "n_train_rows": len(new.row_ids) if "own" in figures else 0,
               "fit_seconds": time.perf_counter() - t0, "backend": str(getattr(backend, "name", backend)),
               "prepared_file": str(new_prepared.path.resolve()), "feature_store": str(store_path.resolve()),
               "feature_attrs": json.dumps({k: str(store.attrs[k]) for k in ("feature", "model", "resolution", "seed")
                                            if k in store.attrs}), **study})
    file.write(out)
    summary = file.summary()
    logger.info("transfer %s (%s) from %s: mean test r = %.3f on %d held-out images", target, settings.decoder, roi,
                summary["mean_r"], len(split.test_ids))
    return {**record, "mean_r": summary["mean_r"]}


def transfer_decoders(new_prepared: str | Path, targets: Mapping[str, tuple[str, Path, Path]],
                      references: Sequence[ReferenceSubject], settings: TransferSettings, split_path: Path, *,
                      config: DecoderConfig | None = None, device: str = "cpu", progress: bool = False
                      ) -> TransferResult:
    """Write the decoder file of each target for the new subject, and the split (``split_path``).

    Parameters
    ----------
    new_prepared : path
        The new subject's prepared file.
    targets : mapping
        Per decoder target: ``(roi, feature store, decoder file to write)``.
    references : sequence of ReferenceSubject
        Each with its prepared file and a full-data decoder file per target.
    settings : TransferSettings
    split_path : Path
        ``transfer/split.json`` of the run.
    config : DecoderConfig, optional
        Ridge grid, folds, chunk, backend and dtype of every fit (alignment maps and own decoder).
    device : str
        Picks the ``auto`` backend; fits run on it.
    progress : bool

    Returns
    -------
    TransferResult

    Raises
    ------
    InvalidArgumentError, DataFormatError, MissingFileError
        Too few shared images, ``sessions`` beyond those on disk, a reference decoder of other
        features or ROI, a missing file: one line each, before any decoder file is written.
    """
    config = DecoderConfig() if config is None else config
    backend = resolve_backend(config.backend, device, option="[decoder] backend")
    new = PreparedData(new_prepared)
    split = make_split(new, references, sessions=session_count(settings.sessions, ""),
                       test_fraction=settings.test_fraction, seed=settings.seed)
    cache: _AlignmentCache = {}
    figures, written = {}, {}
    with device_scope(device):
        for target, (roi, store, out) in targets.items():
            figures[target] = _one_target(new, target, roi, Path(store), Path(out), references, split, settings,
                                          config, backend, cache, progress)
            written[target] = Path(out)
    split.alignment_ids = {label: ids for (label, _), (_, ids) in cache.items()}
    split.write(split_path)
    return TransferResult(written, split, figures)
