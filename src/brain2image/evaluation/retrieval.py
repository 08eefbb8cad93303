"""Top-1 image and brain retrieval between decoded and true feature vectors (MindEye's protocol).

MindEye (Scotti et al. 2023; MindEye2 uses the same protocol) draws 300 test images at random
without replacement, 30 times. *Image retrieval* (brain → image): a decoded vector is correct
when, of the drawn images' true vectors, its own image's is the most similar (cosine similarity).
*Brain retrieval* (image → brain) is the transpose: a true vector is correct when its own image's
decoded vector is the most similar of the drawn decoded vectors. Ties count as misses, so a
constant decoder scores 0, never chance by the order of the candidates. With fewer test images
than candidates every image is used, in one draw; the result records the set size
(``n_candidates``) and ``chance`` = 1 / ``n_candidates``.
"""

from __future__ import annotations

import numpy as np

from ..errors import DataFormatError, InvalidArgumentError

__all__ = ["retrieval_accuracy", "cosine_similarity", "candidate_draws", "top1_hits",
           "DEFAULT_CANDIDATES", "DEFAULT_DRAWS", "DEFAULT_SEED"]

#: MindEye's set size: 300 test images per draw.
DEFAULT_CANDIDATES = 300
#: MindEye's number of draws.
DEFAULT_DRAWS = 30
#: Seed of the draws.
DEFAULT_SEED = 0


def _as_rows(values: np.ndarray, name: str) -> np.ndarray:
    """``values`` as a float32 matrix, one flattened vector per image; refuses NaN, inf and zero vectors."""
    array = np.asarray(values)
    if array.ndim < 2:
        raise InvalidArgumentError(f"retrieval: field '{name}' has shape {array.shape}; expected (n_images, ...)")
    rows = array.reshape(len(array), -1).astype(np.float32, copy=False)
    if rows.shape[1] == 0:
        raise InvalidArgumentError(f"retrieval: field '{name}' has shape {array.shape}; expected non-empty vectors")
    if not np.isfinite(rows).all():
        raise DataFormatError(f"retrieval: field '{name}' has NaN or infinite values; expected finite features")
    norms = np.sqrt(np.einsum("ij,ij->i", rows, rows, dtype=np.float64))
    if not (norms > 0).all():
        raise DataFormatError(f"retrieval: field '{name}' has all-zero vectors (rows "
                              f"{np.flatnonzero(norms == 0)[:5].tolist()}); expected a non-zero vector per image")
    return rows / norms[:, None].astype(np.float32)


def cosine_similarity(decoded: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Cosine similarity of every decoded vector (rows) with every true vector (columns).

    Parameters
    ----------
    decoded, true : ndarray of shape (n_images, ...)
        One feature vector per image (flattened), row i of both for the same image.

    Returns
    -------
    ndarray of shape (n_images, n_images), float32.

    Raises
    ------
    InvalidArgumentError
        When the shapes differ or there are fewer than 2 images.
    DataFormatError
        For NaN, infinite values or an all-zero vector.
    """
    decoded, true = np.asarray(decoded), np.asarray(true)
    if decoded.shape != true.shape:
        raise InvalidArgumentError(f"retrieval: field 'decoded' has shape {decoded.shape}; expected the shape of "
                                   f"'true', {true.shape} (one vector per image, same order)")
    if len(decoded) < 2:
        raise InvalidArgumentError(f"retrieval: field 'n_images' is {len(decoded)}; expected at least 2 images")
    return _as_rows(decoded, "decoded") @ _as_rows(true, "true").T


def candidate_draws(n_images: int, n_candidates: int, n_draws: int, seed: int) -> np.ndarray:
    """The images of each draw: ``n_draws`` seeded samples of ``n_candidates`` without replacement.

    With ``n_images <= n_candidates``: one draw of every image, in order.

    Returns
    -------
    ndarray of shape (n_draws_used, n_candidates_used), int64.

    Raises
    ------
    InvalidArgumentError
        When ``n_candidates < 2`` or ``n_draws < 1``.
    """
    if n_candidates < 2:
        raise InvalidArgumentError(f"retrieval: field 'n_candidates' is {n_candidates}; expected an integer ≥ 2")
    if n_draws < 1:
        raise InvalidArgumentError(f"retrieval: field 'n_draws' is {n_draws}; expected an integer ≥ 1")
    if n_images <= n_candidates:
        return np.arange(n_images, dtype=np.int64)[None, :]
    orders = np.random.default_rng(seed).permuted(np.tile(np.arange(n_images, dtype=np.int64), (n_draws, 1)), axis=1)
    return orders[:, :n_candidates]


def top1_hits(similarity: np.ndarray, draws: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per draw, the share of images retrieved at top 1 in each direction.

    Parameters
    ----------
    similarity : ndarray of shape (n_images, n_images)
        Decoded (rows) × true (columns) similarity.
    draws : ndarray of shape (n_draws, k)
        The images of each draw (:func:`candidate_draws`).

    Returns
    -------
    image, brain : ndarray of shape (n_draws,)
        Image retrieval (each row's own column is its strict maximum among the draw's columns) and
        brain retrieval (each column's own row is its strict maximum among the draw's rows).
    """
    sub = similarity[draws[:, :, None], draws[:, None, :]].astype(np.float64)
    own = np.diagonal(sub, axis1=1, axis2=2)
    others = np.where(np.eye(draws.shape[1], dtype=bool), -np.inf, sub)
    image = (own > others.max(axis=2)).mean(axis=1)
    brain = (own > others.max(axis=1)).mean(axis=1)
    return image, brain


def retrieval_accuracy(decoded: np.ndarray, true: np.ndarray, n_candidates: int = DEFAULT_CANDIDATES,
                       n_draws: int = DEFAULT_DRAWS, seed: int = DEFAULT_SEED) -> dict[str, float | int]:
    """Top-1 image and brain retrieval, averaged over seeded draws of ``n_candidates`` images.

    Parameters
    ----------
    decoded : ndarray of shape (n_images, ...)
        Features decoded from fMRI, one (flattened) vector per test image.
    true : ndarray of shape (n_images, ...)
        The true features, row i of the same image as row i of ``decoded``.
    n_candidates : int
        Images per draw (MindEye: 300); all images, in one draw, when there are no more.
    n_draws : int
        Draws to average over (MindEye: 30).
    seed : int
        Seed of the draws (``numpy.random.default_rng``).

    Returns
    -------
    dict
        ``image`` (brain → image) and ``brain`` (image → brain) top-1 accuracy, ``chance``
        (1 / ``n_candidates``), and the protocol used: ``n_candidates``, ``n_draws`` (both as
        used, after the fallback), ``n_images``, ``seed``.

    Raises
    ------
    InvalidArgumentError
        Mismatched shapes, fewer than 2 images, ``n_candidates < 2`` or ``n_draws < 1``.
    DataFormatError
        NaN or infinite values, or an all-zero vector.
    """
    similarity = cosine_similarity(decoded, true)
    draws = candidate_draws(len(similarity), int(n_candidates), int(n_draws), int(seed))
    image, brain = top1_hits(similarity, draws)
    used_draws, used_candidates = draws.shape
    return {"image": float(image.mean()), "brain": float(brain.mean()), "chance": 1.0 / used_candidates,
            "n_candidates": int(used_candidates), "n_draws": int(used_draws), "n_images": int(len(similarity)),
            "seed": int(seed)}
