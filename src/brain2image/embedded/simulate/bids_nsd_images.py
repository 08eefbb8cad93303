"""A simulated BIDS study that shows a simulated NSD study's images (``simulate --format bids --nsd-study``).

The BIDS subjects then saw images NSD-format subjects saw too, named by their 0-based 73k id in the
events' ``nsd_id`` column, so they can be aligned to those subjects (cross-subject transfer). The
BIDS study's test images are drawn from the NSD study's shared images, its training images from
the others (seeded, :meth:`NsdImages.choose`); the images are read from the NSD tree's stimulus
brick (only those ids), their captions from its COCO-style captions, and their scene labels and
scenes (which the simulated subjects' responses need) from the NSD study's ``simulation_truth.h5``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from ...errors import DataFormatError, InvalidArgumentError, MissingFileError
from ...sources.nsd.design import load_expdesign
from ...sources.nsd.layout import SIMULATION_TRUTH, NSDLayout
from ...sources.nsd.stimuli import check_stimuli, load_captions, read_stimuli

__all__ = ["NSD_ID_COLUMN", "NsdImages", "open_nsd_study"]

#: The events column holding each trial's image as a 0-based NSD 73k id.
NSD_ID_COLUMN = "nsd_id"
_EXPECTED = "expected a folder written by `brain2image simulate` (--format nsd): nsd/ and simulation_truth.h5"


@dataclass(frozen=True)
class NsdImages:
    """The images of a simulated NSD study, as a BIDS simulation reads them.

    Attributes
    ----------
    study : Path
        The study folder (resolved).
    nsd_root : Path
        Its NSD tree (``<study>/nsd``).
    brick : Path
        ``nsd_stimuli.hdf5``.
    truth : Path
        ``<study>/simulation_truth.h5`` (scene labels and scenes of every image).
    n_images : int
        Images of the study's "73k" space.
    image_size : int
        Side of its images, pixels.
    shared : ndarray of shape (n_shared,), int64
        The shared images (0-based 73k ids, sorted): its subjects' test set.
    model_size : int or None
        The side its subjects see the images at (None: ``image_size``).
    """

    study: Path
    nsd_root: Path
    brick: Path
    truth: Path
    n_images: int
    image_size: int
    shared: np.ndarray
    model_size: int | None

    def size_for(self, image_size: int | None) -> int:
        """The BIDS study's image side: the NSD study's (``image_size``, when given, must equal it).

        Raises
        ------
        InvalidArgumentError
        """
        if image_size is not None and int(image_size) != self.image_size:
            raise InvalidArgumentError(f"--image-size {image_size}: the images of --nsd-study {self.study} are "
                                       f"{self.image_size} px; drop --image-size or give {self.image_size}")
        return self.image_size

    def check_fit(self, n_images: int, n_test: int) -> None:
        """The BIDS study's test images must fit the shared images, its training images the others.

        Raises
        ------
        InvalidArgumentError
        """
        n_shared, n_other = len(self.shared), self.n_images - len(self.shared)
        if n_test > n_shared or n_images - n_test > n_other:
            raise InvalidArgumentError(
                f"--nsd-study {self.study}: {n_shared} shared and {n_other} other images, but the BIDS study asks "
                f"for {n_test} test images (from the shared ones) and {n_images - n_test} training images (from "
                f"the others); expected --n-test <= {n_shared} and --n-images - --n-test <= {n_other}")

    def choose(self, test_images: np.ndarray, n_images: int, seed: int) -> np.ndarray:
        """The 0-based 73k id of each BIDS image: shared images for ``test_images``, other images for the rest.

        Parameters
        ----------
        test_images : array of int
            The BIDS study's test image ids (``0 .. n_images - 1``).
        n_images : int
            The BIDS study's images.
        seed : int

        Returns
        -------
        ndarray of shape (n_images,), int64
            Distinct ids; each group's ids ascend with the BIDS image ids.
        """
        rng = np.random.default_rng(seed)
        test = np.unique(np.asarray(test_images, dtype=np.int64))
        others = np.setdiff1d(np.arange(n_images), test)
        pool = np.setdiff1d(np.arange(self.n_images), self.shared)
        out = np.empty(n_images, dtype=np.int64)
        out[test] = np.sort(rng.choice(self.shared, size=len(test), replace=False))
        out[others] = np.sort(rng.choice(pool, size=len(others), replace=False))
        return out

    def images(self, ids: np.ndarray) -> np.ndarray:
        """The brick's images of ``ids`` (0-based 73k ids, any order), (n, S, S, 3) uint8; only those are read."""
        return read_stimuli(self.brick, ids)

    def captions(self, ids: np.ndarray) -> list[list[str]]:
        """The NSD tree's captions of each id."""
        return load_captions(self.nsd_root, ids)

    def labels_and_scenes(self, ids: np.ndarray) -> tuple[np.ndarray, str]:
        """The scene labels (n, n_labels) float32 and the scenes (JSON list) of ``ids``, from the truth file.

        Raises
        ------
        DataFormatError
            A truth file without ``/labels`` or ``/scenes`` of every image.
        """
        ids = np.asarray(ids, dtype=np.int64)
        with h5py.File(self.truth, "r") as handle:
            if "labels" not in handle or "scenes" not in handle or handle["labels"].shape[0] != self.n_images:
                raise DataFormatError(f"{self.truth}: expected /labels ({self.n_images}, n_labels) and /scenes, "
                                      "written by `brain2image simulate`; simulate the NSD study again")
            unique, inverse = np.unique(ids, return_inverse=True)  # h5py reads increasing indices only
            labels = handle["labels"][unique][inverse.reshape(-1)]
            scenes = json.loads(bytes(handle["scenes"][()]).decode("utf-8"))
        return labels.astype(np.float32), json.dumps([scenes[i] for i in ids.tolist()])


def _model_size(truth: Path) -> int | None:
    with h5py.File(truth, "r") as handle:
        value = handle.attrs.get("model_size")
    return None if value is None else int(value)


def open_nsd_study(path: str | os.PathLike) -> NsdImages:
    """Open a study folder written by ``brain2image simulate`` in NSD format (headers only).

    Raises
    ------
    MissingFileError
        No ``nsd/`` tree, stimulus brick, design or ``simulation_truth.h5``.
    DataFormatError
        A malformed brick or design.
    """
    study = Path(path).expanduser().resolve()
    nsd_root, truth = study / "nsd", study / SIMULATION_TRUTH
    for needed in (nsd_root, truth):
        if not needed.exists():
            raise MissingFileError(f"--nsd-study {study}: no {needed.name}; {_EXPECTED}")
    layout = NSDLayout(nsd_root, 1)
    shape, _ = check_stimuli(layout.stimuli(), np.zeros(0, dtype=np.int64))
    shared = np.sort(load_expdesign(layout.expdesign()).sharedix.astype(np.int64) - 1)
    if shape[1] != shape[2] or len(shared) == 0 or shared.min() < 0 or shared.max() >= shape[0]:
        raise DataFormatError(f"{layout.stimuli()}: {shape[0]} images of {shape[1]}x{shape[2]} px and "
                              f"{len(shared)} shared ids; expected square images and shared ids among them")
    return NsdImages(study=study, nsd_root=nsd_root, brick=layout.stimuli(), truth=truth, n_images=int(shape[0]),
                     image_size=int(shape[1]), shared=shared, model_size=_model_size(truth))
