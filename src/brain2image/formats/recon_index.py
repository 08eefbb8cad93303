"""The reconstruction folder: ``<method>/<73kid>_<sample>.png``, ``index.csv`` and ``config.json``.

``index.csv`` has one row per image file, columns ``test_id, method, sample, seed, path`` (path
relative to the folder). ``config.json`` records the model and the generation settings; a resumed
run must use the same pixel-changing settings. Shard ``i`` of ``n`` writes its own
``index.shard-i-of-n.csv`` and ``config.shard-i-of-n.json`` (the record with ``shard: [i, n]``);
:meth:`ReconFolder.merge_shards` joins them into ``index.csv`` and ``config.json``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._io import atomic_path, atomic_write_text, make_output_dir
from ..errors import DataFormatError, MissingFileError
from .partitions import SHARD, choose_count, piece_files, require_consistent, require_pieces, shard_path

__all__ = ["INDEX_COLUMNS", "PIXEL_FIELDS", "ReconFolder", "recon_path"]

#: Columns of ``index.csv``.
INDEX_COLUMNS = ("test_id", "method", "sample", "seed", "path")
#: Generation settings that change pixels: a resumed folder must keep them.
PIXEL_FIELDS = ("num_inference_steps", "strength", "guidance_scale", "eta", "seed")
#: What the shards of one folder must agree on (where both records hold it): of the record, then of its settings.
_SHARD_FIELDS = ("model", "methods", *PIXEL_FIELDS, "n_samples")


def _flat_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """A record's ``model`` and ``methods`` with its generation settings, in one mapping (the fields compared)."""
    return {**record.get("config", {}), **{key: record[key] for key in ("model", "methods") if key in record}}


def recon_path(out_dir: str | os.PathLike, method: str, test_id: int, sample: int) -> Path:
    """``<out_dir>/<method>/<73kid>_<sample>.png``."""
    return Path(out_dir) / str(method) / f"{int(test_id)}_{int(sample)}.png"


class ReconFolder:
    """Reader and writer of one reconstruction folder.

    Parameters
    ----------
    root : path-like
        The folder (``recon`` in a run folder).
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    @property
    def index_path(self) -> Path:
        """``<root>/index.csv``."""
        return self.root / "index.csv"

    @property
    def config_path(self) -> Path:
        """``<root>/config.json``."""
        return self.root / "config.json"

    def shard_files(self, shard: tuple[int, int] | None) -> tuple[Path, Path]:
        """``(index, config)`` of shard ``(i, n)``: ``index.shard-i-of-n.csv``, ``config.shard-i-of-n.json``.

        ``index.csv`` and ``config.json`` without a shard.
        """
        if shard is None:
            return self.index_path, self.config_path
        return shard_path(self.index_path, shard), shard_path(self.config_path, shard)

    def image_path(self, method: str, test_id: int, sample: int) -> Path:
        """Path of one reconstruction PNG."""
        return recon_path(self.root, method, test_id, sample)

    def missing(self, method: str, ids: Iterable[int], n_samples: int) -> np.ndarray:
        """Boolean array, True for each id with at least one sample not on disk yet."""
        return np.array([not all(self.image_path(method, i, s).exists() for s in range(n_samples))
                         for i in ids], dtype=bool)

    # ------------------------------------------------------------------ config.json
    def _read_record(self, path: Path) -> dict[str, Any]:
        try:
            return dict(json.loads(path.read_text()))
        except (json.JSONDecodeError, TypeError, ValueError) as error:
            raise DataFormatError(f"{path}: not valid JSON; delete it") from error

    def check_config(self, record: Mapping[str, Any]) -> None:
        """Refuse to resume a folder written with another model or pixel-changing settings.

        ``record`` holds ``model`` and ``config`` (the generation settings as a dict); it is
        checked against ``config.json`` and every shard's ``config.shard-i-of-n.json``.
        """
        for path in [self.config_path, *piece_files(self.config_path, SHARD)]:
            if not path.is_file():
                continue
            old = self._read_record(path)
            for key in PIXEL_FIELDS:
                before, now = old.get("config", {}).get(key), record["config"][key]
                if before != now:
                    raise DataFormatError(f"{path}: earlier run used {key}={before!r}, this run {now!r}; "
                                          "use another --out folder to keep results apart")
            if old.get("model") != record["model"]:
                raise DataFormatError(f"{path}: earlier run used model {old.get('model')!r}, this run "
                                      f"{record['model']!r}; use another --out folder")

    def write_config(self, record: Mapping[str, Any], shard: tuple[int, int] | None = None) -> None:
        """Write ``config.json`` (a shard's ``config.shard-i-of-n.json``) after :meth:`check_config`."""
        make_output_dir(self.root)
        record = dict(record) if shard is None else {**record, "shard": list(shard)}
        atomic_write_text(self.shard_files(shard)[1], json.dumps(record, indent=2, sort_keys=True))

    # ------------------------------------------------------------------ images
    def write_image(self, method: str, test_id: int, sample: int, image: np.ndarray) -> Path:
        """Write one uint8 (H, W, 3) image as PNG, atomically."""
        from PIL import Image

        path = self.image_path(method, test_id, sample)
        with atomic_path(path) as tmp:
            Image.fromarray(image).save(tmp, format="PNG")
        return path

    # ------------------------------------------------------------------ index.csv
    def write_index(self, methods: Sequence[str], ids: Sequence[int], n_samples: int,
                    seeds: Mapping[tuple[int, int], int], shard: tuple[int, int] | None = None) -> Path:
        """Write ``index.csv`` (a shard's ``index.shard-i-of-n.csv``) for ``methods``.

        Rows of other methods already listed are kept. ``seeds`` maps (test id, sample) to the
        sample's seed.
        """
        import pandas as pd

        rows = [(int(i), str(method), s, int(seeds[int(i), s]), str(recon_path(".", method, i, s)))
                for method in methods for i in ids for s in range(n_samples)]
        return self._write_table(pd.DataFrame(rows, columns=list(INDEX_COLUMNS)), self.shard_files(shard)[0])

    def _write_table(self, index: Any, path: Path) -> Path:
        """Write ``index`` to ``path``, keeping the rows there of methods ``index`` does not hold."""
        import pandas as pd

        if path.is_file():
            previous = pd.read_csv(path)
            index = pd.concat([previous[~previous["method"].isin(index["method"].unique())], index],
                              ignore_index=True)
        with atomic_path(path) as tmp:
            index.to_csv(tmp, index=False)
        return path

    # ------------------------------------------------------------------ shards
    def shard_count(self, n: int | None = None) -> int:
        """The number of shards whose ``index.shard-i-of-n.csv`` lie in the folder (``n`` when given).

        Raises
        ------
        MissingFileError, InvalidArgumentError
            No shard index, or shards of several counts and no ``n``.
        """
        return choose_count(self.index_path, SHARD, n)

    def merge_shards(self, n: int | None = None) -> Path:
        """Join every shard's index and record into ``index.csv`` and ``config.json``.

        Raises
        ------
        DataFormatError
            A shard's index or record missing (``shard 2/3 missing: <path>``), records that differ
            (naming the field), test ids in two shards, or an image listed but not on disk.
        """
        import pandas as pd

        n = self.shard_count(n)
        indexes = require_pieces(self.index_path, SHARD, n)
        configs = require_pieces(self.config_path, SHARD, n)
        records = [self._read_record(config) for config in configs]
        require_consistent([(path, _flat_record(record)) for path, record in zip(configs, records)], _SHARD_FIELDS,
                           when_both=True, expected="shards of one run")
        index = pd.concat([self._checked_table(path) for path in indexes], ignore_index=True)
        self._check_rows(index)
        merged = {k: v for k, v in records[0].items() if k != "shard"}
        self.check_config(merged)
        self._write_table(index, self.index_path)
        atomic_write_text(self.config_path, json.dumps(merged, indent=2, sort_keys=True))
        return self.index_path

    def _checked_table(self, path: Path) -> Any:
        import pandas as pd

        table = pd.read_csv(path)
        missing = [c for c in INDEX_COLUMNS if c not in table.columns]
        if missing:
            raise DataFormatError(f"{path}: missing columns {missing}; expected {list(INDEX_COLUMNS)}")
        return table

    def _check_rows(self, index: Any) -> None:
        """Refuse merged shard rows listing an image twice or an image not on disk."""
        twice = index[index.duplicated(["test_id", "method", "sample"])]
        if len(twice):
            raise DataFormatError(f"{self.root}: field 'test_id' overlaps between shards (e.g. "
                                  f"{sorted(set(twice['test_id'].astype(int).tolist()))[:5]}); expected disjoint "
                                  "shards")
        for path in index["path"]:
            if not self._absolute(str(path)).is_file():
                raise DataFormatError(f"{self._absolute(str(path))}: listed in a shard index but not on disk; "
                                      "rerun that shard")

    def read_table(self) -> Any:
        """``index.csv`` as a pandas DataFrame, its columns checked.

        Raises
        ------
        MissingFileError, DataFormatError
        """
        import pandas as pd

        if not self.index_path.is_file():
            raise MissingFileError(f"{self.index_path} not found: run `brain2image reconstruct` first")
        table = pd.read_csv(self.index_path)
        missing = [c for c in INDEX_COLUMNS if c not in table.columns]
        if missing:
            raise DataFormatError(f"{self.index_path}: missing columns {missing}; expected {list(INDEX_COLUMNS)}")
        if table.empty:
            raise DataFormatError(f"{self.index_path}: no rows")
        return table

    def read_index(self) -> dict[str, dict[int, list[Path]]]:
        """The images of each method: ``{method: {test_id: [PNG path of each sample]}}``.

        Raises
        ------
        MissingFileError, DataFormatError
            No index, missing columns, no rows, or a method whose images have varying sample counts.
        """
        table = self.read_table()
        out: dict[str, dict[int, list[Path]]] = {}
        for method, rows in table.groupby("method", sort=True):
            per_id = {int(test_id): [self._absolute(p) for p in group["path"]]
                      for test_id, group in rows.sort_values(["test_id", "sample"]).groupby("test_id", sort=True)}
            counts = {len(v) for v in per_id.values()}
            if len(counts) != 1:
                raise DataFormatError(f"{self.index_path}: method {method!r} has a varying number of samples "
                                      f"per test image ({sorted(counts)}); expected the same for all")
            out[str(method)] = per_id
        return out

    def _absolute(self, path: str) -> Path:
        p = Path(path)
        return p if p.is_absolute() else self.root / p
