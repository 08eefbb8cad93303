"""One HDF5 feature store per (dataset, model, feature), written resumably, read lazily.

Layout (see ``docs/architecture.md``): dataset ``features`` (n_images, *feature_shape) float32
chunked by row, ``ids`` (n_images,) int64 sorted 0-based 73k ids, ``done`` (n_images,) bool;
attributes ``feature``, ``model``, ``resolution``, ``seed``, ``brain2image_version`` plus
stage-specific ones. An unfinished store lives at ``<name>.partial.h5`` and is renamed to
``<name>.h5`` once every row is done. Shards write ``<name>.shard-i-of-n.h5``
(:mod:`brain2image.formats.partitions` names and finds them; :func:`merge_stores` joins them). The
study attribute and its check are :mod:`brain2image.formats.provenance`'s.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .. import __version__
from .._io import atomic_path, disk_full_error, is_disk_full
from ..errors import DataFormatError, InvalidArgumentError, MissingFileError
from ._hdf5 import has_datasets, open_hdf5
from .partitions import (
    SHARD,
    SHARD_KEYS,
    choose_count,
    parse_piece_name,
    parse_shard,
    require_consistent,
    require_one_set,
    require_pieces,
    whole_path,
)
from .provenance import STUDY_KEY, plain_value

__all__ = ["FeatureStore", "merge_stores", "merge_feature_shards", "partial_path", "PROVENANCE_KEYS", "RESULT_KEYS",
           "model_slug", "feature_store_path"]

logger = logging.getLogger(__name__)

#: Attributes that must agree when a partial store is resumed or shards are merged.
PROVENANCE_KEYS = ("feature", "model", "resolution", "seed")
#: Other attributes that change the features: shards must agree on them too (when both record them).
RESULT_KEYS = ("scaling_factor", "latent_sample", "caption_reduction")


def model_slug(name: str) -> str:
    """A file-name-safe short name of a model.

    ``CompVis/stable-diffusion-v1-4`` → ``CompVis--stable-diffusion-v1-4``; a local folder → its
    name; ``random:sd-v1-4`` → ``random--sd-v1-4`` (no ``:``, which Windows refuses); a plain name
    (``bundled``) → itself.
    """
    name = str(name)
    if "/" in name or os.sep in name:
        path = Path(name).expanduser()
        name = path.resolve().name if path.is_dir() else name.strip("/").replace("/", "--")
    return name.replace(":", "--")


def feature_store_path(features_dir: str | os.PathLike, dataset: str, model_name: str, feature: str) -> Path:
    """``<features_dir>/<dataset>_<model>_<feature>.h5`` (``model`` as :func:`model_slug`)."""
    return Path(features_dir) / f"{dataset}_{model_slug(model_name)}_{feature}.h5"


def partial_path(path: str | os.PathLike) -> Path:
    """``<name>.partial.h5`` for a store whose final path is ``<name>.h5``."""
    path = Path(path)
    return path.with_name(path.name[: -len(path.suffix)] + ".partial" + path.suffix)


def _write_layout(f: h5py.File, ids: np.ndarray, feature_shape: tuple[int, ...], attrs: Mapping[str, Any],
                  done: bool) -> h5py.Dataset:
    """Create a store's datasets (``features`` chunked by row, ``ids``, ``done``) and attributes."""
    features = f.create_dataset("features", shape=(len(ids), *feature_shape), dtype=np.float32,
                                chunks=(1, *feature_shape) if len(ids) else None)
    f.create_dataset("ids", data=ids)
    f.create_dataset("done", data=np.full(len(ids), done, dtype=bool))
    for key, value in attrs.items():
        f.attrs[key] = value
    f.attrs["brain2image_version"] = __version__
    return features


class FeatureStore:
    """A feature store on disk.

    Use :meth:`create` to start (or resume) writing, :meth:`open` to read a finished store.

    Parameters
    ----------
    path : path-like
        The final path ``<name>.h5`` (the store may still live at its partial path).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.partial_path = partial_path(self.path)

    # ------------------------------------------------------------------ creation
    @classmethod
    def create(cls, path: str | os.PathLike, ids: np.ndarray, feature_shape: Sequence[int],
               attrs: Mapping[str, Any]) -> FeatureStore:
        """Start a store, or resume its partial file when the same store was begun before.

        Parameters
        ----------
        path : path-like
            Final path ``<name>.h5``.
        ids : array of shape (n_images,)
            73k ids (sorted and de-duplicated here).
        feature_shape : sequence of int
            Shape of one image's feature.
        attrs : mapping
            Provenance; must hold ``feature``, ``model``, ``resolution``, ``seed``.

        Raises
        ------
        DataFormatError
            If a partial or final store at ``path`` was written with other ids, shape or
            provenance (delete it or pick another output folder).
        """
        store = cls(path)
        ids = np.unique(np.asarray(ids, dtype=np.int64))
        feature_shape = tuple(int(s) for s in feature_shape)
        missing = [k for k in PROVENANCE_KEYS if k not in attrs]
        if missing:
            raise ValueError(f"feature store attrs lack {missing}")
        if store.partial_path.exists() and not store.path.exists() and not _is_readable(store.partial_path):
            # A process killed inside an HDF5 write can leave the partial file unreadable: start it again.
            logger.warning("%s: unreadable (a write was interrupted); starting this store again",
                           store.partial_path)
            store.partial_path.unlink()
        for existing in (store.path, store.partial_path):
            if existing.exists():
                store._check_matches(existing, ids, feature_shape, attrs)
                return store
        with atomic_path(store.partial_path) as tmp, h5py.File(tmp, "w") as f:
            _write_layout(f, ids, feature_shape, attrs, done=False)
        return store

    @staticmethod
    def _check_matches(file: Path, ids: np.ndarray, feature_shape: tuple, attrs: Mapping[str, Any]) -> None:
        with open_hdf5(file, "feature store") as f:
            if "features" not in f or "ids" not in f or "done" not in f:
                raise DataFormatError(f"{file}: not a feature store (needs 'features', 'ids', 'done'); delete it")
            old_shape = tuple(f["features"].shape[1:])
            if old_shape != feature_shape:
                raise DataFormatError(f"{file}: 'features' rows have shape {old_shape}, expected {feature_shape}; "
                                      "delete it or choose another output folder")
            if not np.array_equal(f["ids"][()], ids):
                raise DataFormatError(f"{file}: 'ids' ({len(f['ids'])} ids) differ from the {len(ids)} ids asked "
                                      "for; delete it or choose another output folder / dataset name")
            for key in PROVENANCE_KEYS + ((STUDY_KEY,) if STUDY_KEY in f.attrs and STUDY_KEY in attrs else ()):
                old = plain_value(f.attrs.get(key))
                if old != plain_value(attrs[key]):
                    raise DataFormatError(f"{file}: attribute '{key}' is {old!r}, expected {attrs[key]!r}; "
                                          "delete it or choose another output folder")

    # ------------------------------------------------------------------ state
    @property
    def is_complete(self) -> bool:
        """Whether the final file exists (every row written)."""
        return self.path.exists()

    def _file(self) -> Path:
        if self.path.exists():
            return self.path
        if self.partial_path.exists():
            return self.partial_path
        raise MissingFileError(f"feature store {self.path} not found")

    def missing_ids(self) -> np.ndarray:
        """Ids whose rows are not written yet, sorted; empty once complete."""
        with h5py.File(self._file(), "r") as f:
            return f["ids"][()][~f["done"][()]]

    def write(self, ids: np.ndarray, values: np.ndarray) -> None:
        """Write the rows of ``ids`` (must be in the store) into the partial file and mark them done.

        Parameters
        ----------
        ids : array of shape (n_batch,)
        values : array of shape (n_batch, *feature_shape)
        """
        ids = np.asarray(ids, dtype=np.int64)
        values = np.asarray(values, dtype=np.float32)
        if not self.partial_path.exists():
            raise MissingFileError(f"{self.partial_path}: no partial store to write into (already complete?)")
        order = np.argsort(ids)
        ids, values = ids[order], values[order]
        try:
            with h5py.File(self.partial_path, "r+") as f:
                all_ids = f["ids"][()]
                pos = np.searchsorted(all_ids, ids)
                if np.any(pos >= len(all_ids)) or np.any(all_ids[np.minimum(pos, len(all_ids) - 1)] != ids):
                    raise DataFormatError(f"{self.partial_path}: ids {ids[:5].tolist()}... are not all in the store")
                if len(np.unique(pos)) != len(pos):
                    raise ValueError("duplicate ids in one write")
                if values.shape[1:] != f["features"].shape[1:]:
                    raise DataFormatError(f"{self.partial_path}: rows of shape {values.shape[1:]} do not fit "
                                          f"'features' rows {f['features'].shape[1:]}")
                f["features"][pos] = values
                f.flush()  # the rows reach the file before they are marked done
                done = f["done"][()]
                done[pos] = True
                f["done"][...] = done
                f.flush()
        except OSError as error:
            if not is_disk_full(error):
                raise
            raise disk_full_error(self.partial_path, error, "the rows finished before stay there and the "
                                  "command resumes from them") from error

    def finalize(self) -> Path:
        """Rename the partial file to the final path once every row is done; returns the final path."""
        if self.path.exists() and not self.partial_path.exists():
            return self.path
        missing = self.missing_ids()
        if len(missing):
            raise DataFormatError(f"{self.partial_path}: {len(missing)} rows not written yet "
                                  f"(e.g. ids {missing[:5].tolist()}); rerun to resume")
        os.replace(self.partial_path, self.path)
        return self.path

    # ------------------------------------------------------------------ reading
    @staticmethod
    def is_feature_store(path: str | os.PathLike) -> bool:
        """Whether ``path`` is an HDF5 file with a store's ``ids`` and ``features``."""
        return has_datasets(path, ("ids", "features"))

    @classmethod
    def open(cls, path: str | os.PathLike) -> FeatureStore:
        """A finished store for reading.

        Raises
        ------
        MissingFileError
            If only the partial file exists (the run is unfinished) or nothing does.
        """
        store = cls(path)
        if not store.path.exists():
            if store.partial_path.exists():
                raise MissingFileError(f"feature store {store.path} is unfinished ({store.partial_path} exists); "
                                       "rerun `brain2image features` to complete it")
            raise MissingFileError(f"feature store {store.path} not found")
        with open_hdf5(store.path, "feature store") as f:
            for name in ("features", "ids"):
                if name not in f:
                    raise DataFormatError(f"{store.path}: no dataset '{name}' (not a feature store)")
        return store

    @property
    def ids(self) -> np.ndarray:
        """Sorted ids of the store, shape (n_images,)."""
        with h5py.File(self._file(), "r") as f:
            return f["ids"][()]

    @property
    def feature_shape(self) -> tuple[int, ...]:
        """Shape of one image's feature."""
        with h5py.File(self._file(), "r") as f:
            return tuple(f["features"].shape[1:])

    @property
    def attrs(self) -> dict[str, Any]:
        """Provenance attributes of the store."""
        with h5py.File(self._file(), "r") as f:
            return {k: plain_value(v) for k, v in f.attrs.items()}

    def __len__(self) -> int:
        with h5py.File(self._file(), "r") as f:
            return len(f["ids"])

    def read(self, ids: np.ndarray | None = None) -> np.ndarray:
        """Rows of ``ids`` in the order asked (all rows when ``None``).

        Parameters
        ----------
        ids : array of shape (n_rows,), optional
            Any order, duplicates allowed.

        Returns
        -------
        array of shape (n_rows, *feature_shape), float32
        """
        with h5py.File(self.path, "r") as f:
            if ids is None:
                return f["features"][()]
            ids = np.asarray(ids, dtype=np.int64)
            all_ids = f["ids"][()]
            unique, inverse = np.unique(ids, return_inverse=True)
            pos = np.searchsorted(all_ids, unique)
            found = (pos < len(all_ids)) & (all_ids[np.minimum(pos, max(len(all_ids) - 1, 0))] == unique) \
                if len(all_ids) else np.zeros(len(unique), bool)
            if not np.all(found):
                raise DataFormatError(f"{self.path}: ids {unique[~found][:5].tolist()} are not in the store "
                                      f"({len(all_ids)} ids)")
            if len(unique) == 0:
                return np.zeros((0, *f["features"].shape[1:]), dtype=np.float32)
            rows = f["features"][pos]  # sorted unique indices, as h5py requires
        return rows[inverse.reshape(-1)]

    def read_flat(self, ids: np.ndarray, *, needed_by: str = "", block_bytes: int = 256 * 2**20,
                  columns: tuple[int, int] | None = None) -> np.ndarray:
        """Rows of ``ids`` flattened to (n_ids, n_values) float32, read in contiguous row blocks.

        Memory stays at the output plus one block (``block_bytes``), however scattered the ids are:
        what the ridge decoders need for tens of thousands of c targets.

        Parameters
        ----------
        ids : array of shape (n_ids,)
            73k ids, any order, duplicates allowed.
        needed_by : str
            Who needs them (named in the error, e.g. "training ids of prepared file X").
        block_bytes : int
        columns : (start, stop), optional
            Only these flattened values of each row (a decoder's part of the targets); only the
            slices of the features' first axis that hold them are read.

        Raises
        ------
        DataFormatError
            When the store's layout is broken, lacks an id, or an id is not computed yet (``done``).
        """
        ids = np.asarray(ids, dtype=np.int64)
        with h5py.File(self._file(), "r") as f:
            store_ids = self._checked_ids(f)
            rows = self._rows_of(store_ids, ids, needed_by)
            if "done" in f and not f["done"][()].astype(bool)[rows].all():
                raise DataFormatError(f"{self.path}: field 'done' is False for some needed images; "
                                      "expected a complete feature store (finish `brain2image features`)")
            return _read_row_blocks(f["features"], rows, block_bytes, self._columns(f["features"].shape, columns))

    def _columns(self, shape: tuple[int, ...], columns: tuple[int, int] | None) -> tuple[int, int] | None:
        """``columns`` checked against the flattened feature size (``None``: all)."""
        if columns is None:
            return None
        n_values = int(np.prod(shape[1:]))
        start, stop = (int(v) for v in columns)
        if not 0 <= start < stop <= n_values:
            raise InvalidArgumentError(f"{self.path}: columns {start}:{stop} are outside the {n_values} values of "
                                       f"a feature of shape {tuple(shape[1:])}; expected 0 <= start < stop <= "
                                       f"{n_values}")
        return start, stop

    def _checked_ids(self, f: h5py.File) -> np.ndarray:
        for key in ("features", "ids"):
            if key not in f:
                raise DataFormatError(f"{self.path}: missing dataset /{key} (feature store layout)")
        store_ids = f["ids"][()].astype(np.int64)
        if len(store_ids) != f["features"].shape[0]:
            raise DataFormatError(f"{self.path}: /ids has {len(store_ids)} entries but /features has "
                                  f"{f['features'].shape[0]} rows; expected equal")
        if np.any(np.diff(store_ids) <= 0):
            raise DataFormatError(f"{self.path}: /ids must be strictly increasing 73k ids")
        return store_ids

    def _rows_of(self, store_ids: np.ndarray, wanted: np.ndarray, needed_by: str) -> np.ndarray:
        pos = np.searchsorted(store_ids, wanted)
        if len(store_ids):
            missing = (pos >= len(store_ids)) | (store_ids[np.minimum(pos, len(store_ids) - 1)] != wanted)
        else:
            missing = np.ones(len(wanted), dtype=bool)
        if np.any(missing):
            bad = np.unique(wanted[missing])
            raise DataFormatError(f"feature store {self.path} (field 'ids') lacks {len(bad)} 73k id(s)"
                                  f"{' ' + needed_by if needed_by else ''}, e.g. {bad[:5].tolist()}; "
                                  "expected every id to have features")
        return pos


def _read_row_blocks(ds: h5py.Dataset, rows: np.ndarray, block_bytes: int,
                     columns: tuple[int, int] | None = None) -> np.ndarray:
    """``ds[rows]`` flattened to (len(rows), n_values) float32, read in contiguous row blocks.

    With ``columns`` (start, stop) of the flattened values, only the slices of the features'
    first axis that hold them are read, and the output has ``stop - start`` columns.
    """
    n_values = int(np.prod(ds.shape[1:]))
    start, stop = (0, n_values) if columns is None else columns
    inner = int(np.prod(ds.shape[2:]))
    first, last = start // inner, -(-stop // inner)  # slices of the first feature axis holding the columns
    offset, read_values = start - first * inner, (last - first) * inner
    out = np.empty((len(rows), stop - start), dtype=np.float32)
    order = np.argsort(rows)
    sorted_rows = rows[order]
    block = max(1, block_bytes // max(1, read_values * 4))
    i = 0
    while i < len(sorted_rows):
        lo = sorted_rows[i]
        j = np.searchsorted(sorted_rows, lo + block, side="left")
        slab = ds[lo:sorted_rows[j - 1] + 1, first:last].reshape(-1, read_values)[:, offset:offset + stop - start]
        out[order[i:j]] = slab[sorted_rows[i:j] - lo]
        i = j
    return out


def _is_readable(path: Path) -> bool:
    try:
        with h5py.File(path, "r") as f:
            return all(name in f for name in ("ids", "features", "done"))
    except OSError:
        return False


def _shard_of(path: Path, attrs: Mapping[str, Any]) -> tuple[int, int] | None:
    """``(i, n)`` of a shard store: its ``shard`` attribute, else its file name; None for other stores."""
    if attrs.get("shard"):
        return parse_shard(str(attrs["shard"]))
    parsed = parse_piece_name(path.name)
    return None if parsed is None or parsed.kind != SHARD else (parsed.i, parsed.n)


def _check_same_attrs(stores: Sequence[FeatureStore], attrs: Sequence[Mapping[str, Any]]) -> None:
    """Refuse shards of other sets or id sets, or whose shape or feature-changing attributes differ."""
    require_one_set([(store.path, _shard_of(store.path, a)) for store, a in zip(stores, attrs)], SHARD)
    records = [(store.path, a) for store, a in zip(stores, attrs)]
    require_consistent(records, SHARD_KEYS[1:], when_both=True, expected="shards of one id set")
    first = stores[0]
    for store in stores[1:]:
        if store.feature_shape != first.feature_shape:
            raise DataFormatError(f"{store.path}: feature shape {store.feature_shape} differs from "
                                  f"{first.path}'s {first.feature_shape}")
    require_consistent(records, PROVENANCE_KEYS, expected="stores of the same features")
    require_consistent(records, (*RESULT_KEYS, STUDY_KEY), when_both=True, expected="stores of the same features")


def merge_stores(paths: Sequence[str | os.PathLike], out: str | os.PathLike) -> Path:
    """Join finished shard stores (disjoint ids, same provenance and shape) into one store.

    Parameters
    ----------
    paths : sequence of path-like
        Shard stores (``<name>.shard-i-of-n.h5``), each complete; when they are shards, every
        shard ``1..n`` of one set, computed from the same ids.
    out : path-like
        Final path of the merged store (written atomically).

    Returns
    -------
    Path of the merged store.

    Raises
    ------
    DataFormatError
        A shard missing or given twice, shards of different sets, studies, shapes or feature
        settings, overlapping ids, or fewer ids than the shards were cut from.
    """
    stores = [FeatureStore.open(p) for p in paths]
    if not stores:
        raise ValueError("merge_stores needs at least one store")
    attrs = [store.attrs for store in stores]
    _check_same_attrs(stores, attrs)
    shard_id_lists = [s.ids for s in stores]
    all_ids = np.concatenate(shard_id_lists)
    merged = np.unique(all_ids)
    if len(merged) != len(all_ids):
        raise DataFormatError(f"shards {[str(p) for p in paths]}: field 'ids' overlaps between shards; "
                              "expected disjoint shards")
    total = attrs[0].get("shard_total_ids")
    if total is not None and int(total) != len(merged):
        raise DataFormatError(f"{stores[0].path}: field 'shard_total_ids' is {total}, but the shards hold "
                              f"{len(merged)} ids; expected every shard of the set")
    kept = {k: v for k, v in attrs[0].items() if k not in SHARD_KEYS and k != "brain2image_version"}
    with atomic_path(out) as tmp, h5py.File(tmp, "w") as f:
        features = _write_layout(f, merged, stores[0].feature_shape, kept, done=True)
        for store, ids in zip(stores, shard_id_lists):
            pos = np.searchsorted(merged, ids)
            with h5py.File(store.path, "r") as src:
                for start in range(0, len(ids), 256):
                    features[pos[start:start + 256]] = src["features"][start:start + 256]
    return Path(out)


def merge_feature_shards(path: str | os.PathLike, n: int | None = None) -> Path:
    """Join the shards ``<name>.shard-i-of-n.h5`` beside ``path`` (``<name>.h5``) into ``path``.

    Parameters
    ----------
    path : path-like
        The store to write; a shard's own path stands for it.
    n : int, optional
        The number of shards; needed only when shards of several counts lie beside ``path``.

    Raises
    ------
    MissingFileError
        No shard of ``path`` on disk (and no ``n``).
    InvalidArgumentError
        Shards of several counts and no ``n``.
    DataFormatError
        A missing shard (``shard 2/3 missing: <path>``) or an inconsistent set (:func:`merge_stores`).
    """
    whole = whole_path(path)
    shards = require_pieces(whole, SHARD, choose_count(whole, SHARD, n))
    return merge_stores(shards, whole)
