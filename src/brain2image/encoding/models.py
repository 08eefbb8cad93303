"""Voxelwise ridge encoding models on himalaya, solved once per feature space for all voxels.

Training rows are single trials, and a trial's features are its image's features (rows repeated
by index). Ridge on repeated rows is solved exactly on the unique images: for image ``i`` seen
``n_i`` times with mean response ``ybar_i``,

    sum_t ||y_t - x_i(t) b||^2 = sum_i n_i ||ybar_i - x_i b||^2 + const,

so the single-trial ridge solution equals ridge on ``(sqrt(n_i) x_i, sqrt(n_i) ybar_i)``. Kernels
(or ``X^T X``) are therefore built over unique images only (≈9k instead of ≈25k rows in NSD), and
cross-validation folds are grouped by image (no image in both a training and a validation fold).

The ridge core (:mod:`brain2image.ridge`) gives the reduction of trials to unique images
(:func:`~brain2image.ridge.repeated_rows`), the folds (:func:`~brain2image.ridge.grouped_folds`,
shuffled over unique images with ``random_state``), the target chunk
(:func:`~brain2image.ridge.check_target_chunk`; on ``torch_cuda`` an unset one is sized from the
free GPU memory, :func:`~brain2image.ridge.memory.encoding_target_chunk`) and the backend
(:func:`~brain2image.ridge.himalaya_backend`, given explicitly as ``backend``); every result comes
back as a numpy array, whatever the backend. The solvers themselves stay himalaya's (``RidgeCV``
with its SVD solver, ``KernelRidgeCV`` with its eigenvalue solver, ``MultipleKernelRidgeCV`` with
random search over kernel weights): they pick alpha by the mean over folds of the per-fold R^2,
which the core's pooled-error CV does not do, and the core has no kernel or banded solver.

Features are standardised with trial-weighted means and standard deviations and divided by
``sqrt(n_features)`` (the linear kernel's diagonal is then ≈1 per trial, whatever the feature
space's size, so one alpha grid fits all spaces). Responses are centred on their trial mean;
the models need no intercept afterwards.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal, overload

import numpy as np

from ..config import ENCODING_ALPHAS
from ..ridge import BackendLike, check_target_chunk, grouped_folds, himalaya_backend, repeated_rows
from ..ridge.memory import encoding_target_chunk

__all__ = ["TrainDesign", "reduce_trials", "SpaceData", "prepare_space", "fit_space", "fit_banded",
           "primal_weights", "DEFAULT_ALPHAS"]

logger = logging.getLogger(__name__)

#: Default ridge grid (see :data:`brain2image.config.ENCODING_ALPHAS`).
DEFAULT_ALPHAS: tuple[float, ...] = ENCODING_ALPHAS


@dataclass
class TrainDesign:
    """Training trials reduced to unique images.

    Attributes
    ----------
    rows : array of shape (n_unique,)
        Row (into the feature arrays) of each unique training image, sorted.
    counts : array of shape (n_unique,)
        Trials of each unique image.
    y : array of shape (n_unique, n_voxels), float32
        ``sqrt(n_i) * (ybar_i - y_offset)``: the weighted, centred targets.
    y_offset : array of shape (n_voxels,)
        Mean response over all training trials.
    """

    rows: np.ndarray
    counts: np.ndarray
    y: np.ndarray
    y_offset: np.ndarray

    @property
    def weights(self) -> np.ndarray:
        """``sqrt(counts)``, shape (n_unique,)."""
        return np.sqrt(self.counts.astype(np.float64))


def reduce_trials(train_index: np.ndarray, Y_train: np.ndarray) -> TrainDesign:
    """Reduce single-trial rows to unique images (mean response and count per image).

    Parameters
    ----------
    train_index : array of shape (n_trials,)
        Row of each trial's image in the feature arrays.
    Y_train : array of shape (n_trials, n_voxels)

    Returns
    -------
    TrainDesign
    """
    train_index = np.asarray(train_index, dtype=np.int64)
    if train_index.ndim != 1 or len(train_index) != len(Y_train):
        raise ValueError(f"train_index has shape {train_index.shape}; expected ({len(Y_train)},) "
                         "(one row per training trial)")
    repeats = repeated_rows(train_index)
    y_offset = np.asarray(Y_train, dtype=np.float64).mean(axis=0)
    # Mean per unique image through the core's sparse averaging matrix: one pass over Y, no loop.
    y_mean = repeats.means(np.asarray(Y_train, dtype=np.float32))
    y = (np.sqrt(repeats.counts)[:, None] * (y_mean - y_offset)).astype(np.float32)
    return TrainDesign(rows=repeats.images, counts=repeats.counts, y=y, y_offset=y_offset.astype(np.float32))


@dataclass
class SpaceData:
    """One feature space ready for ridge: primal matrices or linear kernels over unique images.

    Attributes
    ----------
    kind : {"primal", "kernel"}
    train : array of shape (n_unique, n_features) or (n_unique, n_unique)
        Weighted standardised features, or their linear kernel.
    test : array of shape (n_test, n_features) or (n_test, n_unique)
    n_features : int
    mean, std : arrays of shape (n_features,), float64, optional
        The trial-weighted standardisation of each feature (``std`` 1 for a constant feature):
        the model's input is ``(x - mean) / std / sqrt(n_features)``.
    """

    kind: str
    train: np.ndarray
    test: np.ndarray
    n_features: int
    mean: np.ndarray | None = None
    std: np.ndarray | None = None

    @property
    def scale(self) -> np.ndarray:
        """``std * sqrt(n_features)``: the model's input is ``(x - mean) / scale``, shape (n_features,)."""
        if self.std is None:
            raise ValueError("this SpaceData holds no standardisation (built before prepare_space kept it)")
        return self.std * np.sqrt(self.n_features)


def _moments(features: np.ndarray, rows: np.ndarray, counts: np.ndarray, start: int, stop: int
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Feature columns ``start:stop`` of the unique images and their trial-weighted mean and sd."""
    block = np.asarray(features[rows, start:stop], dtype=np.float64)
    w = counts / counts.sum()
    mean = w @ block
    std = np.sqrt(np.maximum(w @ (block - mean) ** 2, 0.0))
    std[std == 0] = 1.0
    return block, mean, std


def prepare_space(features: np.ndarray, design: TrainDesign, test_rows: np.ndarray, *,
                  kernel: bool | None = None, chunk: int = 8192) -> SpaceData:
    """Standardise one feature space and build its primal matrices or linear kernels.

    Parameters
    ----------
    features : array of shape (n_images, ...)
        Features of every image (flattened to (n_images, n_features)).
    design : TrainDesign
    test_rows : array of shape (n_test,)
        Row of each test image.
    kernel : bool, optional
        Force the kernel (True) or primal (False) form; default: kernel when
        ``n_features > n_unique`` (himalaya ``KernelRidgeCV``), else primal (``RidgeCV``).
    chunk : int
        Feature columns standardised at a time when building kernels (bounds memory).

    Returns
    -------
    SpaceData
    """
    features = np.asarray(features)
    features = features.reshape(len(features), -1)
    n_features = features.shape[1]
    test_rows = np.asarray(test_rows, dtype=np.int64)
    if kernel is None:
        kernel = n_features > len(design.rows)
    weights = design.weights[:, None]
    scale = 1.0 / np.sqrt(n_features)
    if not kernel:
        block, mean, std = _moments(features, design.rows, design.counts, 0, n_features)
        train = ((block - mean) / std * scale * weights).astype(np.float32)
        test = ((np.asarray(features[test_rows], dtype=np.float64) - mean) / std * scale).astype(np.float32)
        return SpaceData("primal", train, test, n_features, mean, std)
    n_unique, n_test = len(design.rows), len(test_rows)
    k_train = np.zeros((n_unique, n_unique), dtype=np.float64)
    k_test = np.zeros((n_test, n_unique), dtype=np.float64)
    means, stds = np.zeros(n_features), np.ones(n_features)
    for start in range(0, n_features, chunk):
        stop = min(start + chunk, n_features)
        block, mean, std = _moments(features, design.rows, design.counts, start, stop)
        means[start:stop], stds[start:stop] = mean, std
        xw = ((block - mean) / std * scale * weights).astype(np.float32)
        xt = ((np.asarray(features[test_rows, start:stop], dtype=np.float64) - mean) / std * scale
              ).astype(np.float32)
        k_train += xw @ xw.T
        k_test += xt @ xw.T
    return SpaceData("kernel", k_train.astype(np.float32), k_test.astype(np.float32), n_features, means, stds)


def _folds(design: TrainDesign, n_folds: int, random_state: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """K folds over the unique training images, shuffled with ``random_state`` (ridge core)."""
    return grouped_folds(design.rows, n_folds, shuffle=True, random_state=random_state)


def _batch_params(design: TrainDesign, target_chunk: int | None, backend: BackendLike, *, n_test: int,
                  n_kernels: int, n_alphas: int, n_folds: int) -> dict[str, int]:
    """Target batching of the himalaya solvers.

    ``target_chunk`` as given on the CPU backends (``None``: every voxel at once); on
    ``torch_cuda``, what the free GPU memory holds, capped by ``target_chunk``.
    """
    n_unique, n_voxels = design.y.shape
    chunk = encoding_target_chunk(target_chunk, backend, n_unique=n_unique, n_test=n_test, n_voxels=n_voxels,
                                  n_kernels=n_kernels, n_alphas=n_alphas, n_folds=n_folds)
    batch = check_target_chunk(chunk, n_voxels)
    return {"n_targets_batch": batch, "n_targets_batch_refit": batch}


@overload
def fit_space(space: SpaceData, design: TrainDesign, *, alphas: Any = ..., n_folds: int = ..., random_state: int = ...,
              target_chunk: int | None = ..., backend: BackendLike = ..., return_coef: Literal[False] = ...
              ) -> tuple[np.ndarray, np.ndarray]: ...


@overload
def fit_space(space: SpaceData, design: TrainDesign, *, alphas: Any = ..., n_folds: int = ..., random_state: int = ...,
              target_chunk: int | None = ..., backend: BackendLike = ..., return_coef: Literal[True]
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...


def fit_space(space: SpaceData, design: TrainDesign, *, alphas: Any = DEFAULT_ALPHAS, n_folds: int = 5,
              random_state: int = 0, target_chunk: int | None = None, backend: BackendLike = "numpy",
              return_coef: bool = False) -> tuple[np.ndarray, ...]:
    """Fit one feature space to every voxel; per-voxel alpha chosen by cross-validation.

    Parameters
    ----------
    space : SpaceData
    design : TrainDesign
    alphas : sequence of float
    n_folds : int
        Folds over unique training images (shuffled with ``random_state``).
    random_state : int
    target_chunk : int, optional
        Voxels solved at a time (bounds memory; himalaya's ``n_targets_batch``); default all (on
        ``torch_cuda``: what the free GPU memory holds, :mod:`brain2image.ridge.memory`).
    backend : str or module
        himalaya backend the estimator runs on (``"numpy"``, ``"torch"``, ``"torch_cuda"``, a
        resolved name: :func:`~brain2image.ridge.backend.resolve_backend`).
    return_coef : bool
        Also return the fitted coefficients (turn them into weights with :func:`primal_weights`).

    Returns
    -------
    pred : array of shape (n_test, n_voxels), float32
        Test predictions, training mean added back.
    best_alphas : array of shape (n_voxels,)
    coef : array of shape (n_features, n_voxels) or (n_unique, n_voxels), float32
        With ``return_coef``: himalaya's ``coef_`` (primal form) or ``dual_coef_`` (kernel form)
        of the model refitted on every training image with each voxel's alpha.
    """
    from himalaya.kernel_ridge import KernelRidgeCV
    from himalaya.ridge import RidgeCV

    params = _batch_params(design, target_chunk, backend, n_test=len(space.test), n_kernels=1,
                           n_alphas=int(np.size(alphas)), n_folds=n_folds)
    cv = _folds(design, n_folds, random_state)
    model: Any
    if space.kind == "kernel":
        model = KernelRidgeCV(alphas=np.asarray(alphas), kernel="precomputed", solver="eigenvalues",
                              solver_params=params, cv=cv)
    else:
        model = RidgeCV(alphas=np.asarray(alphas), solver="svd", solver_params=params, cv=cv)
    with himalaya_backend(backend) as bk:
        model.fit(space.train, design.y)
        pred = np.asarray(bk.to_numpy(model.predict(space.test))).astype(np.float32) + design.y_offset
        best_alphas = np.asarray(bk.to_numpy(model.best_alphas_))
        if not return_coef:
            return pred, best_alphas
        coef = model.dual_coef_ if space.kind == "kernel" else model.coef_
        rows = len(space.train) if space.kind == "kernel" else space.n_features
        return pred, best_alphas, np.asarray(bk.to_numpy(coef), dtype=np.float32).reshape(rows, -1)


def primal_weights(features: np.ndarray, space: SpaceData, design: TrainDesign, coef: np.ndarray, *,
                   chunk: int = 8192) -> np.ndarray:
    """The ridge weights on the standardised features of a model :func:`fit_space` fitted.

    In the primal form they are ``coef`` itself; in the kernel form ``X^T coef``, with ``X`` the
    weighted standardised training features (built again, ``chunk`` columns at a time), so that
    ``(x - space.mean) / space.scale @ weights`` is the kernel model's prediction for any image.

    Parameters
    ----------
    features : array of shape (n_images, ...)
        The features :func:`prepare_space` was given.
    space : SpaceData
        What :func:`prepare_space` returned (it holds the standardisation).
    design : TrainDesign
    coef : array of shape (n_features, n_voxels) or (n_unique, n_voxels)
        The ``coef`` :func:`fit_space` returned with ``return_coef=True``.

    Returns
    -------
    weights : array of shape (n_features, n_voxels), float32
    """
    if space.kind == "primal":
        return np.asarray(coef, dtype=np.float32)
    if space.mean is None or space.std is None:
        raise ValueError("primal_weights needs the standardisation prepare_space keeps in the SpaceData")
    features = np.asarray(features)
    features = features.reshape(len(features), -1)
    weights = np.empty((space.n_features, coef.shape[1]), dtype=np.float32)
    row_weights = design.weights[:, None] / np.sqrt(space.n_features)
    coef = np.asarray(coef, dtype=np.float32)
    for start in range(0, space.n_features, chunk):
        stop = min(start + chunk, space.n_features)
        block = np.asarray(features[design.rows, start:stop], dtype=np.float64)
        xw = ((block - space.mean[start:stop]) / space.std[start:stop] * row_weights).astype(np.float32)
        weights[start:stop] = xw.T @ coef
    return weights


def fit_banded(spaces: list[SpaceData], design: TrainDesign, *, alphas: Any = DEFAULT_ALPHAS, n_folds: int = 5,
               n_iter: int = 20, random_state: int = 0, target_chunk: int | None = None,
               backend: BackendLike = "numpy") -> tuple[np.ndarray, np.ndarray]:
    """Joint banded ridge over several feature spaces (``MultipleKernelRidgeCV``, random search).

    Each space enters as its linear kernel over unique images; the per-voxel kernel weights and
    alpha are chosen by cross-validation (``n_iter`` random weight draws from a Dirichlet).

    Parameters
    ----------
    spaces : list of SpaceData
        In kernel form (see :func:`prepare_space` with ``kernel=True``).
    design : TrainDesign
    alphas, n_folds, random_state, target_chunk, backend : see :func:`fit_space`
    n_iter : int

    Returns
    -------
    pred : array of shape (n_test, n_voxels), float32
    weights : array of shape (n_spaces, n_voxels)
        Kernel weights ``exp(deltas_)`` of each voxel's chosen model.
    """
    from himalaya.kernel_ridge import MultipleKernelRidgeCV

    if any(s.kind != "kernel" for s in spaces):
        raise ValueError("fit_banded needs every space in kernel form (prepare_space(..., kernel=True))")
    model = MultipleKernelRidgeCV(
        kernels="precomputed", solver="random_search", cv=_folds(design, n_folds, random_state),
        random_state=random_state,
        solver_params={"n_iter": n_iter, "alphas": np.asarray(alphas), "progress_bar": False,
                       **_batch_params(design, target_chunk, backend, n_test=len(spaces[0].test),
                                       n_kernels=len(spaces), n_alphas=int(np.size(alphas)), n_folds=n_folds)})
    with himalaya_backend(backend) as bk:
        model.fit(np.stack([s.train for s in spaces]), design.y)
        pred = np.asarray(bk.to_numpy(model.predict(np.stack([s.test for s in spaces])))).astype(np.float32)
        deltas = np.asarray(bk.to_numpy(model.deltas_))
    return pred + design.y_offset, np.exp(deltas)
