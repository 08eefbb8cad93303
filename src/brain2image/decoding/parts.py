"""A decoder fitted in parts of its targets (one cluster task each), and the merge of the parts.

Each target's alpha is chosen by its own cross-validation, so the targets split into independent
fits: part ``i`` of ``n`` (1-based, as shards are) holds the contiguous columns
:func:`target_part_columns` of the flattened targets. A part is a decoder file of its own
(``subjXX_<target>_<roi>.part-i-of-n.h5`` beside the decoder, :func:`decoder_part_path`) whose
targets are flat and whose attributes record the part (:data:`PART_KEYS`);
:func:`merge_decoder_parts` checks that the parts agree and joins them into the file a fit of every
target at once writes. The voxel side (its standardisation) is the same in every part; each part
repeats the decomposition of the voxels' Gram matrix, which is what a part costs on top of its
share of the targets.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataFormatError, InvalidArgumentError, MissingFileError
from ..formats.decoder_file import DecoderFile
from ..formats.partitions import (
    PART,
    parse_shard,
    piece_path,
    require_consistent,
    require_pieces,
    require_recorded,
)

__all__ = ["PART_KEYS", "target_part_columns", "non_empty_parts", "decoder_part_path", "part_attrs",
           "merge_decoder_parts"]

logger = logging.getLogger(__name__)

#: Attributes of a part file: ``part`` ("i/n"), ``part_columns`` (start, stop of the flattened
#: targets), ``part_chunk`` (the block size the parts were cut in) and ``full_target_shape``
#: (JSON list: the target shape of the merged decoder).
PART_KEYS = ("part", "part_columns", "part_chunk", "full_target_shape")
#: Attributes every part of one decoder must share (each is compared; the first difference is named).
SHARED_KEYS = ("decoder_config", "roi", "target", "subject", "prepared_file", "feature_store", "full_target_shape",
               "part_chunk",
               "n_train_rows", "n_train_images", "backend", "dtype", "alpha_grid", "stimuli_identity", "nsd_root")
#: Attributes that differ between parts and are not carried into the merged decoder as they are.
_PER_PART_KEYS = (*PART_KEYS, "fit_seconds")


def target_part_columns(n_targets: int, part: tuple[int, int], chunk: int = 1) -> tuple[int, int] | None:
    """``(start, stop)`` of part ``i`` of ``n`` of ``n_targets`` flattened targets; ``None`` for an empty part.

    The targets are cut into blocks of ``chunk`` (the decoder's ``target_chunk``: the columns the
    ridge solves at a time) and the blocks are shared out in order, their counts differing by at
    most one; a part with no block is empty. A part made of whole blocks is solved exactly as a
    fit of every target solves them, so the merged decoder equals that fit bit for bit (where the
    fit solves blocks of ``chunk``: on ``torch_cuda`` the free GPU memory may make them smaller,
    and the parts then agree with a single fit to float rounding).

    Raises
    ------
    InvalidArgumentError
        For a part that is not ``(i, n)`` with 1 ≤ i ≤ n.
    """
    i, n = parse_shard(f"{part[0]}/{part[1]}")
    blocks = np.array_split(np.arange(-(-int(n_targets) // max(1, int(chunk)))), n)[i - 1]
    if blocks.size == 0:
        return None
    return int(blocks[0]) * chunk, min(int(blocks[-1] + 1) * chunk, int(n_targets))


def non_empty_parts(n_targets: int, n: int, chunk: int = 1) -> list[int]:
    """The parts ``i`` of ``n`` that hold targets (:func:`target_part_columns`)."""
    return [i for i in range(1, n + 1) if target_part_columns(n_targets, (i, n), chunk) is not None]


def decoder_part_path(path: str | os.PathLike, part: tuple[int, int]) -> Path:
    """``<name>.part-i-of-n.h5`` for part ``(i, n)`` of the decoder file ``<name>.h5``."""
    return piece_path(path, PART, part)


def part_attrs(full_target_shape: Sequence[int], part: tuple[int, int], chunk: int) -> dict[str, Any]:
    """The attributes that mark a decoder file as part ``(i, n)`` of a decoder of ``full_target_shape``.

    Raises
    ------
    InvalidArgumentError
        For an empty part (no block of ``chunk`` targets left for it).
    """
    n_targets = int(np.prod(full_target_shape))
    columns = target_part_columns(n_targets, part, chunk)
    if columns is None:
        blocks = -(-n_targets // chunk)
        raise InvalidArgumentError(f"target part {part[0]}/{part[1]}: no targets left for it ({n_targets} targets in "
                                   f"{blocks} block(s) of target_chunk {chunk}); expected at most {blocks} parts")
    return {"part": f"{part[0]}/{part[1]}", "part_columns": np.asarray(columns, dtype=np.int64),
            "part_chunk": int(chunk), "full_target_shape": json.dumps([int(n) for n in full_target_shape])}


def _check_parts(paths: list[Path], parts: list[int], n: int) -> tuple[list[dict[str, Any]], tuple[int, ...]]:
    """The parts' attributes, checked: each is its part, all share :data:`SHARED_KEYS`; returns them and the shape."""
    attrs = [DecoderFile.read_attrs(path) for path in paths]
    for index, path, values in zip(parts, paths, attrs):
        require_recorded(path, values.get("part"), PART, (index, n))
    require_consistent(list(zip(paths, attrs)), SHARED_KEYS, expected="parts of one fit (same inputs and settings)")
    shape = tuple(int(v) for v in json.loads(attrs[0]["full_target_shape"]))
    for index, path, values in zip(parts, paths, attrs):
        expected = target_part_columns(int(np.prod(shape)), (index, n), int(values["part_chunk"]))
        if tuple(int(v) for v in np.ravel(values["part_columns"])) != expected:
            raise DataFormatError(f"{path}: field 'part_columns' is {list(np.ravel(values['part_columns']))}; "
                                  f"expected {expected}")
    return attrs, shape


def _expected_parts(path: Path, n: int) -> tuple[list[int], list[Path]]:
    """The parts of ``n`` that hold targets and their files (from any part file present).

    Raises
    ------
    MissingFileError
        When no part, or a part that holds targets, is on disk.
    """
    files = [decoder_part_path(path, (i, n)) for i in range(1, n + 1)]
    present = [file for file in files if file.is_file()]
    if not present:
        raise MissingFileError(f"{path}: cannot merge the decoder's parts: no {path.stem}.part-i-of-{n}{path.suffix} "
                               f"in {path.parent}; expected the parts of brain2image fit --target-part i/{n}")
    first = DecoderFile.read_attrs(present[0])
    n_targets = int(np.prod(json.loads(first.get("full_target_shape", "[0]"))))
    parts = non_empty_parts(n_targets, n, int(first.get("part_chunk", 1)))
    return parts, require_pieces(path, PART, n, parts, error=MissingFileError,
                                 expected=f"expected all {len(parts)} parts that hold targets (fit them first)")


def merge_decoder_parts(path: str | os.PathLike, n: int, *, remove: bool = True) -> Path:
    """Join the ``n`` part files of the decoder ``path`` into it (atomically); then remove the parts.

    Memory: the merged weights plus one part's.

    Parameters
    ----------
    path : path-like
        The decoder file to write (its parts are :func:`decoder_part_path` of it).
    n : int
        Number of parts (the empty ones, which hold no block of targets, have no file).
    remove : bool
        Remove the part files once the decoder is written.

    Returns
    -------
    Path

    Raises
    ------
    MissingFileError
        When a part file that holds targets is missing (every missing one is named).
    DataFormatError
        When a part is not the expected part, or the parts disagree (the differing field is named).
    """
    path = Path(path)
    parts, paths = _expected_parts(path, n)
    attrs, shape = _check_parts(paths, parts, n)
    merged: DecoderFile | None = None
    for part_path, values in zip(paths, attrs):
        part = DecoderFile.read(part_path, load_weights=True)
        assert part.coef is not None and part.intercept is not None
        start, stop = (int(v) for v in np.ravel(values["part_columns"]))
        if merged is None:
            merged = _empty_merged(part, values, shape, n)
        elif not (np.array_equal(np.asarray(part.x_mean), np.asarray(merged.x_mean))
                  and np.array_equal(part.test_ids, merged.test_ids)):
            raise DataFormatError(f"{part_path}: field 'x_mean' or 'test/ids' differs from {paths[0].name}; "
                                  "expected parts fitted on the same voxels and test images")
        assert merged.coef is not None and merged.intercept is not None
        merged.coef[:, start:stop] = part.coef
        merged.intercept[start:stop] = part.intercept
        for name in ("alphas", "cv_score", "test_corr"):
            getattr(merged, name)[start:stop] = getattr(part, name)
        merged.test_pred.reshape(len(merged.test_ids), -1)[:, start:stop] = part.test_pred
        merged.attrs["fit_seconds"] += float(values.get("fit_seconds", 0.0))
    assert merged is not None
    merged.write(path)
    logger.info("merged %d parts into %s", n, path)
    if remove:
        for part_path in paths:
            part_path.unlink()
    return path


def _empty_merged(first: DecoderFile, attrs: dict[str, Any], shape: tuple[int, ...], n: int) -> DecoderFile:
    """The merged decoder before its columns are filled: the voxel side and attributes of the first part."""
    n_targets, n_test = int(np.prod(shape)), len(first.test_ids)
    assert first.coef is not None and first.intercept is not None
    kept = {k: v for k, v in attrs.items() if k not in _PER_PART_KEYS}
    kept.update(fit_seconds=0.0, fitted_in_parts=int(n))
    def column(values: np.ndarray) -> np.ndarray:
        return np.empty(n_targets, values.dtype)

    return DecoderFile(test_ids=first.test_ids, test_pred=np.empty((n_test, *shape), np.float32),
                       test_corr=column(first.test_corr), alphas=column(first.alphas), cv_score=column(first.cv_score),
                       config=first.config, attrs=kept, coef=np.empty((first.coef.shape[0], n_targets), np.float32),
                       intercept=np.empty(n_targets, np.float32), x_mean=first.x_mean, x_std=first.x_std)
