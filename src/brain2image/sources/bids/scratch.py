"""The single-trial betas of a subject's runs, kept beside the output while ``prepare`` runs (resumable).

``<out>.betas-partial.h5`` holds one dataset per run (``runs/<index>``, (n_trials, n_voxels) float32,
marked complete once written) and, as an attribute, the record of everything the betas depend on
(GLM settings, confounds, voxels, the runs' files). A rerun with the same record skips the runs
already there; with another record, or a file that cannot be read, it starts over.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np

__all__ = ["ScratchBetas", "scratch_path"]

_RECORD = "record"
_COMPLETE = "complete"


def scratch_path(out: Path) -> Path:
    """``<out>.betas-partial.h5``."""
    return out.with_name(out.name + ".betas-partial.h5")


class ScratchBetas:
    """Runs' betas on disk, keyed by the run's position in the subject's run list.

    Parameters
    ----------
    path : Path
    record : str
        What the betas depend on; a file with another record is discarded.
    """

    def __init__(self, path: Path, record: str) -> None:
        self.path = path
        self.record = record
        self._done = self._resume()

    def _resume(self) -> set[int]:
        """The runs already complete in a file of the same record (the file is removed otherwise)."""
        if not self.path.exists():
            return set()
        try:
            with h5py.File(self.path, "r") as handle:
                if handle.attrs.get(_RECORD) == self.record and "runs" in handle:
                    return {int(k) for k, d in handle["runs"].items() if d.attrs.get(_COMPLETE, False)}
        except OSError:
            pass
        self.path.unlink()
        return set()

    @property
    def done(self) -> set[int]:
        """Runs whose betas are in the file."""
        return set(self._done)

    def append(self, index: int, betas: np.ndarray) -> None:
        """Write run ``index``'s betas, array of shape (n_trials, n_voxels)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(self.path, "a") as handle:
            handle.attrs[_RECORD] = self.record
            runs = handle.require_group("runs")
            if str(index) in runs:
                del runs[str(index)]
            data = runs.create_dataset(str(index), data=np.asarray(betas, dtype=np.float32))
            data.attrs[_COMPLETE] = True
        self._done.add(index)

    def read(self, indices: Sequence[int]) -> np.ndarray:
        """The betas of runs ``indices`` stacked in that order, array of shape (n_trials, n_voxels)."""
        with h5py.File(self.path, "r") as handle:
            return np.concatenate([handle["runs"][str(i)][()] for i in indices])

    def remove(self) -> None:
        """Delete the file (``prepare`` finished)."""
        self.path.unlink(missing_ok=True)
