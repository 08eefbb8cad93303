"""The reconstruction folder: ``<method>/<73kid>_<sample>.png``, ``index.csv`` and ``config.json``.

``index.csv`` has one row per image file, columns ``test_id, method, sample, seed, path`` (path
relative to the folder). ``config.json`` records the model and the generation settings; a resumed
run must use the same pixel-changing settings.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._io import atomic_path, atomic_write_text
from ..errors import DataFormatError, MissingFileError

__all__ = ["INDEX_COLUMNS", "PIXEL_FIELDS", "ReconFolder", "recon_path"]

#: Columns of ``index.csv``.
INDEX_COLUMNS = ("test_id", "method", "sample", "seed", "path")
#: Generation settings that change pixels: a resumed folder must keep them.
PIXEL_FIELDS = ("num_inference_steps", "strength", "guidance_scale", "eta", "seed")


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

    def image_path(self, method: str, test_id: int, sample: int) -> Path:
        """Path of one reconstruction PNG."""
        return recon_path(self.root, method, test_id, sample)

    def missing(self, method: str, ids: Iterable[int], n_samples: int) -> np.ndarray:
        """Boolean array, True for each id with at least one sample not on disk yet."""
        return np.array([not all(self.image_path(method, i, s).exists() for s in range(n_samples))
                         for i in ids], dtype=bool)

    # ------------------------------------------------------------------ config.json
    def check_config(self, record: Mapping[str, Any]) -> None:
        """Refuse to resume a folder written with another model or pixel-changing settings.

        ``record`` holds ``model`` and ``config`` (the generation settings as a dict).
        """
        if not self.config_path.is_file():
            return
        try:
            old = json.loads(self.config_path.read_text())
        except json.JSONDecodeError as error:
            raise DataFormatError(f"{self.config_path}: not valid JSON; delete it") from error
        for key in PIXEL_FIELDS:
            before, now = old.get("config", {}).get(key), record["config"][key]
            if before != now:
                raise DataFormatError(f"{self.config_path}: earlier run used {key}={before!r}, this run {now!r}; "
                                      "use another --out folder to keep results apart")
        if old.get("model") != record["model"]:
            raise DataFormatError(f"{self.config_path}: earlier run used model {old.get('model')!r}, this run "
                                  f"{record['model']!r}; use another --out folder")

    def write_config(self, record: Mapping[str, Any]) -> None:
        """Write ``config.json`` (after :meth:`check_config`)."""
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.config_path, json.dumps(record, indent=2, sort_keys=True))

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
                    seeds: Mapping[tuple[int, int], int]) -> Path:
        """Write ``index.csv`` for ``methods``; rows of other methods already listed are kept.

        ``seeds`` maps (test id, sample) to the sample's seed.
        """
        import pandas as pd

        rows = [(int(i), str(method), s, int(seeds[int(i), s]), str(recon_path(".", method, i, s)))
                for method in methods for i in ids for s in range(n_samples)]
        index = pd.DataFrame(rows, columns=list(INDEX_COLUMNS))
        if self.index_path.is_file():
            previous = pd.read_csv(self.index_path)
            index = pd.concat([previous[~previous["method"].isin([str(m) for m in methods])], index],
                              ignore_index=True)
        with atomic_path(self.index_path) as tmp:
            index.to_csv(tmp, index=False)
        return self.index_path

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
