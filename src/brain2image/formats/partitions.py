"""Partial outputs: the file of each piece of a split output, which sets of pieces exist, and their checks.

A task of a split stage writes one piece of an output, beside the file the whole output becomes:

========================= =========================================== ==================================
kind                      piece of ``<stem><ext>``                    written by
========================= =========================================== ==================================
:data:`SHARD` ``(i, n)``  ``<stem>.shard-i-of-n<ext>``                a part of the image ids: feature
                                                                      stores, a reconstruction folder's
                                                                      ``index.csv`` / ``config.json``,
                                                                      the features record
:data:`PART` ``(i, n)``   ``<stem>.part-i-of-n<ext>``                 a part of a decoder's targets
named                     ``<folder>/<name>.h5`` (:func:`named_piece`) one model of an encoding analysis
========================= =========================================== ==================================

``i`` is 1-based. This module owns those names (:func:`piece_path`, :func:`parse_piece_name`), finds
which sets of pieces lie beside a whole (:func:`piece_counts`, :func:`complete_counts`,
:func:`choose_count`), names the missing pieces of a set (:func:`require_pieces`) and refuses pieces
that do not belong together (:func:`require_one_set`, :func:`require_recorded`,
:func:`require_consistent`). Joining the pieces is each format's own business (the feature store,
the decoder file, the reconstruction folder, the encoding results).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import quote

import numpy as np

from ..errors import Brain2ImageError, DataFormatError, InvalidArgumentError, MissingFileError

__all__ = ["SHARD", "PART", "SHARD_KEYS", "PieceName", "piece_path", "shard_path", "part_path", "parse_piece_name",
           "whole_path", "piece_files", "piece_counts", "complete_counts", "choose_count", "missing_pieces",
           "require_pieces", "require_one_set", "require_recorded", "first_difference", "require_consistent",
           "incomplete", "named_piece", "parse_shard", "checked_piece", "shard_ids", "shard_attrs"]

#: A piece of the rows of an output (a part of the image ids).
SHARD = "shard"
#: A piece of the columns of an output (a part of a decoder's targets).
PART = "part"
#: Attributes of a shard of a feature store: ``shard`` ("i/n"), the count and SHA-256 of the full id set.
SHARD_KEYS = ("shard", "shard_total_ids", "shard_ids_sha256")

_PIECE_NAME = re.compile(rf"^(?P<base>.+)\.(?P<kind>{SHARD}|{PART})-(?P<i>\d+)-of-(?P<n>\d+)(?P<suffix>\.[^.]+)$")
_MISSING = object()


class PieceName(NamedTuple):
    """A piece's file name read back: the whole's file name, the kind, and ``(i, n)``."""

    whole: str
    kind: str
    i: int
    n: int


# ---------------------------------------------------------------------------------------------- names
def piece_path(path: str | os.PathLike, kind: str, piece: tuple[int, int]) -> Path:
    """``<stem>.<kind>-i-of-n<ext>`` beside ``path`` (``<stem><ext>``) for piece ``(i, n)``."""
    path = Path(path)
    i, n = piece
    return path.with_name(f"{path.name[: -len(path.suffix)]}.{kind}-{i}-of-{n}{path.suffix}")


def shard_path(path: str | os.PathLike, shard: tuple[int, int]) -> Path:
    """``<stem>.shard-i-of-n<ext>``: shard ``(i, n)`` of the output ``<stem><ext>``."""
    return piece_path(path, SHARD, shard)


def part_path(path: str | os.PathLike, part: tuple[int, int]) -> Path:
    """``<stem>.part-i-of-n<ext>``: part ``(i, n)`` of the output ``<stem><ext>``."""
    return piece_path(path, PART, part)


def parse_piece_name(name: str) -> PieceName | None:
    """The whole, kind and ``(i, n)`` of a piece's file name; ``None`` for any other name."""
    match = _PIECE_NAME.match(name)
    if match is None:
        return None
    return PieceName(match["base"] + match["suffix"], match["kind"], int(match["i"]), int(match["n"]))


def whole_path(path: str | os.PathLike) -> Path:
    """The output a piece's path stands for (``<stem><ext>``); any other path is itself."""
    path = Path(path)
    parsed = parse_piece_name(path.name)
    return path if parsed is None else path.with_name(parsed.whole)


def named_piece(folder: str | os.PathLike, name: str, suffix: str = ".h5") -> Path:
    """``<folder>/<name><suffix>``, the name made file-safe: the piece of an output split by names.

    Characters other than letters, digits and ``_.-~`` are percent-encoded, then ``|`` (``%7C``, which
    joins two names) becomes ``+`` (which itself is encoded), so distinct names never share a file.
    """
    return Path(folder) / (quote(name, safe="").replace("%7C", "+") + suffix)


# ---------------------------------------------------------------------------------------------- discovery
def piece_files(whole: str | os.PathLike, kind: str) -> list[Path]:
    """Every piece file of ``kind`` of the output ``whole`` on disk (of any count), sorted."""
    whole = Path(whole)
    found = []
    for path in whole.parent.glob(f"{whole.stem}.{kind}-*-of-*{whole.suffix}"):
        parsed = parse_piece_name(path.name)
        if parsed is not None and parsed.kind == kind and parsed.whole == whole.name:
            found.append(path)
    return sorted(found)


def piece_counts(whole: str | os.PathLike, kind: str) -> list[int]:
    """The counts ``n`` of the pieces of ``kind`` beside ``whole``, sorted (empty: none)."""
    return sorted({parsed.n for path in piece_files(whole, kind) if (parsed := parse_piece_name(path.name))})


def complete_counts(whole: str | os.PathLike, kind: str) -> list[int]:
    """The counts ``n`` whose pieces ``1..n`` of ``kind`` are all files beside ``whole``, sorted."""
    return [n for n in piece_counts(whole, kind) if not missing_pieces(whole, kind, n)]


def choose_count(whole: str | os.PathLike, kind: str, n: int | None = None) -> int:
    """The number of pieces to join: ``n`` when given, else the one count of the pieces beside ``whole``.

    Raises
    ------
    MissingFileError
        No piece of ``kind`` beside ``whole`` (and no ``n``).
    InvalidArgumentError
        Pieces of several counts (and no ``n``).
    """
    if n is not None:
        return int(n)
    whole = Path(whole)
    counts = piece_counts(whole, kind)
    if not counts:
        raise MissingFileError(f"{whole}: no {kind} files {whole.stem}.{kind}-i-of-n{whole.suffix} beside it")
    if len(counts) > 1:
        raise InvalidArgumentError(f"{whole}: {kind}s of {counts} parts lie beside it; expected one count "
                                   "(pass --n)")
    return counts[0]


# ---------------------------------------------------------------------------------------------- completeness
def missing_pieces(whole: str | os.PathLike, kind: str, n: int, indices: Iterable[int] | None = None
                   ) -> list[tuple[int, Path]]:
    """``(i, path)`` of each piece ``i`` of ``n`` (default every ``1..n``) not on disk."""
    wanted = range(1, n + 1) if indices is None else indices
    return [(i, path) for i in wanted if not (path := piece_path(whole, kind, (i, n))).is_file()]


def require_pieces(whole: str | os.PathLike, kind: str, n: int, indices: Iterable[int] | None = None, *,
                   error: type[Brain2ImageError] = DataFormatError, expected: str = "") -> list[Path]:
    """The files of the pieces ``indices`` (default ``1..n``) of ``whole``; every missing one is named.

    Raises
    ------
    DataFormatError (or ``error``)
        ``shard 2/3 missing: <path>`` (each missing piece, joined by ``;``), then ``expected``.
    """
    wanted = list(range(1, n + 1) if indices is None else indices)
    missing = missing_pieces(whole, kind, n, wanted)
    if missing:
        text = "; ".join(f"{kind} {i}/{n} missing: {path}" for i, path in missing)
        raise error(text + (f"; {expected}" if expected else ""))
    return [piece_path(whole, kind, (i, n)) for i in wanted]


def incomplete(pieces: Mapping[str, Any], is_complete: Callable[[Any], bool] = bool) -> list[str]:
    """The names of the pieces (name -> what is known of each on disk) that are not complete, in order."""
    return [name for name, found in pieces.items() if not is_complete(found)]


# ---------------------------------------------------------------------------------------------- consistency
def require_one_set(pieces: Sequence[tuple[Path, tuple[int, int] | None]], kind: str) -> None:
    """Refuse pieces (each path with its ``(i, n)``, ``None``: not a piece) that are not one whole set.

    Files that are all not pieces pass (nothing to check).

    Raises
    ------
    DataFormatError
        Pieces of several counts (or a non-piece among pieces), or a piece missing or given twice.
    """
    if not pieces or all(tag is None for _, tag in pieces):
        return
    tags = [(0, 0) if tag is None else tag for _, tag in pieces]
    first, n = pieces[0][0], tags[0][1]
    for (path, _), tag in zip(pieces, tags):
        if tag[1] != n:
            shown = "none" if tag == (0, 0) else f"{tag[0]}/{tag[1]}"
            raise DataFormatError(f"{path}: field '{kind}' is {shown}, but {first} is {kind} {tags[0][0]}/{n}; "
                                  f"expected {kind}s of one set")
    given = [i for i, _ in tags]
    for i in range(1, n + 1):
        if given.count(i) != 1:
            state = "missing" if i not in given else "given twice"
            raise DataFormatError(f"{kind} {i}/{n} {state}: {piece_path(whole_path(first), kind, (i, n))}")


def require_recorded(path: str | os.PathLike, recorded: Any, kind: str, piece: tuple[int, int]) -> None:
    """Refuse a piece file whose recorded ``kind`` attribute (``"i/n"``) is not the piece its name says.

    Raises
    ------
    DataFormatError
        ``<path>: field 'part' is '3/3'; expected '2/3'``.
    """
    expected = f"{piece[0]}/{piece[1]}"
    if recorded != expected:
        raise DataFormatError(f"{path}: field '{kind}' is {recorded!r}; expected {expected!r}")


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return bool(np.array_equal(np.asarray(a), np.asarray(b)))
    return bool(a == b)


def first_difference(reference: Mapping[str, Any], other: Mapping[str, Any], keys: Iterable[str], *,
                     when_both: bool = False) -> str | None:
    """The first of ``keys`` whose value differs between two records (arrays compared by value); ``None``.

    A key one record lacks differs, unless ``when_both`` (then only keys both records hold are compared).
    """
    for key in keys:
        a, b = reference.get(key, _MISSING), other.get(key, _MISSING)
        if (a is _MISSING or b is _MISSING) and when_both:
            continue
        if (a is _MISSING) != (b is _MISSING) or not _same(a, b):
            return key
    return None


def require_consistent(records: Sequence[tuple[str | os.PathLike, Mapping[str, Any]]], keys: Sequence[str], *,
                       when_both: bool = False, expected: str = "pieces of one output") -> None:
    """Refuse pieces whose records (path, attributes) differ from the first's on any of ``keys``.

    Raises
    ------
    DataFormatError
        ``<path>: field 'seed' is 1, but <first> has 0; expected <expected>``.
    """
    if not records:
        return
    first, reference = records[0]
    for path, record in records[1:]:
        key = first_difference(reference, record, keys, when_both=when_both)
        if key is not None:
            raise DataFormatError(f"{path}: field '{key}' is {record.get(key)!r}, but {first} has "
                                  f"{reference.get(key)!r}; expected {expected}")


# ---------------------------------------------------------------------------------------------- shards of ids
def parse_shard(text: str) -> tuple[int, int]:
    """Parse ``"i/n"`` (1-based, 1 ≤ i ≤ n) into ``(i, n)``.

    Raises
    ------
    InvalidArgumentError
        (a ``ValueError``) for any other text, e.g. ``3/2``.
    """
    try:
        parts: tuple[Any, ...] = tuple(int(part) for part in str(text).split("/"))
    except ValueError:
        parts = (str(text),)
    return checked_piece(parts)


def checked_piece(piece: Any) -> tuple[int, int]:
    """``piece`` as ``(i, n)`` when it is a pair of integers with 1 ≤ i ≤ n.

    Raises
    ------
    InvalidArgumentError
        ``shard 3/2: expected i/n with integers 1 ≤ i ≤ n, e.g. 1/4``.
    """
    try:
        i, n = piece
        valid = all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in (i, n)) and 1 <= i <= n
    except (TypeError, ValueError):
        valid = False
    if not valid:
        shown = "/".join(str(v) for v in piece) if isinstance(piece, (tuple, list)) else str(piece)
        raise InvalidArgumentError(f"shard {shown}: expected i/n with integers 1 ≤ i ≤ n, e.g. 1/4")
    return int(i), int(n)


def shard_ids(ids: np.ndarray, shard: tuple[int, int], unit: int = 1) -> np.ndarray:
    """The contiguous part ``i`` of ``n`` of the sorted unique ``ids``, cut only at multiples of ``unit``.

    The ids are cut into blocks of ``unit`` (the last may be shorter) and the blocks shared out as
    evenly as they go, the first parts taking one more; a part may be empty when there are fewer
    blocks than parts. ``unit = 1`` is ``np.array_split`` of the ids.

    Raises
    ------
    InvalidArgumentError
        For a shard that is not ``(i, n)`` with 1 ≤ i ≤ n.
    """
    i, n = checked_piece(shard)
    full, unit = np.unique(np.asarray(ids, dtype=np.int64)), max(1, int(unit))
    blocks = np.array_split(np.arange(-(-len(full) // unit)), n)  # block numbers of each part
    start = sum(len(part) for part in blocks[:i - 1]) * unit
    return full[start:min(len(full), start + len(blocks[i - 1]) * unit)]


def shard_attrs(ids: np.ndarray, shard: tuple[int, int]) -> dict[str, Any]:
    """The attributes of shard ``(i, n)`` of the full sorted unique ``ids`` (:data:`SHARD_KEYS`)."""
    i, n = checked_piece(shard)
    full = np.unique(np.asarray(ids, dtype=np.int64))
    return {"shard": f"{i}/{n}", "shard_total_ids": int(len(full)),
            "shard_ids_sha256": hashlib.sha256(full.astype("<i8").tobytes()).hexdigest()}
