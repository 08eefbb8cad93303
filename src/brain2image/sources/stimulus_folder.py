"""A study's stimuli as a folder of image files (+ ``captions.tsv``): :class:`FolderStimuli`.

Image ids are ``0 .. n - 1`` over the sorted POSIX relative paths of every image file in the folder
(recursively, hidden files and folders left out), so a study's events name an image by its path
relative to the folder (BIDS ``stim_file``). Images of any size and format Pillow reads are
centre-cropped to a square and resized to ``image_size`` (NSD's are 425 px). Captions come from
``<folder>/captions.tsv``: tab-separated, header ``stim_file<TAB>caption``, several rows per image
allowed, ``n/a`` for none.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from functools import cached_property
from pathlib import Path

import numpy as np

from ..errors import DataFormatError, MissingFileError

__all__ = ["FolderStimuli", "IMAGE_SUFFIXES", "CAPTIONS_FILE", "SIMULATED_BY", "generated_by_simulate"]

#: ``GeneratedBy`` name in the ``dataset_description.json`` of a study ``brain2image simulate`` wrote.
SIMULATED_BY = "brain2image simulate"


def generated_by_simulate(root: str | os.PathLike) -> bool:
    """Whether ``<root>/dataset_description.json``'s ``GeneratedBy`` names :data:`SIMULATED_BY`."""
    try:
        description = json.loads((Path(root) / "dataset_description.json").read_text())
    except (OSError, ValueError):
        return False
    generated = description.get("GeneratedBy") if isinstance(description, dict) else None
    return isinstance(generated, list) and any(isinstance(g, dict) and g.get("Name") == SIMULATED_BY
                                               for g in generated)

#: File endings read as images (case-insensitive).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
#: The captions table inside the stimulus folder.
CAPTIONS_FILE = "captions.tsv"
#: A folder name a ``stim_file`` may start with (BIDS: relative to the root's ``stimuli/``).
_STIMULI_PREFIX = "stimuli/"


def _normalised(value: str) -> str:
    """A ``stim_file`` as a POSIX relative path: backslashes to slashes, no leading ``./``."""
    text = str(value).strip().replace("\\", "/")
    while text.startswith("./"):
        text = text[2:]
    return text


def _is_hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


def _open_error(path: Path, error: Exception) -> DataFormatError:
    return DataFormatError(f"{path}: Pillow cannot read it as an image ({type(error).__name__}: "
                           f"{str(error).splitlines()[0] if str(error) else 'unreadable'}); replace or remove the file")


class FolderStimuli:
    """The images of a folder (and their captions), by integer id.

    Parameters
    ----------
    folder : path-like
        The stimulus folder (BIDS: ``<root>/stimuli``).
    image_size : int
        Side in pixels of the square images returned (centre crop, then Lanczos resize).
    simulated : bool
        Whether the study is simulated (:meth:`is_simulated`).
    label : str
        What the folder is, in messages (:meth:`describe`).
    """

    def __init__(self, folder: str | os.PathLike, *, image_size: int = 425, simulated: bool = False,
                 label: str = "stimuli") -> None:
        if int(image_size) < 1:
            raise ValueError(f"image_size must be a positive number of pixels, got {image_size!r}")
        self.folder = Path(folder).expanduser()
        self.image_size = int(image_size)
        self.simulated = bool(simulated)
        self.label = label

    def __repr__(self) -> str:
        return f"FolderStimuli({str(self.folder)!r}, image_size={self.image_size})"

    @cached_property
    def _files(self) -> list[str]:
        """Sorted POSIX paths (relative to the folder) of its image files; read once per instance."""
        if not self.folder.is_dir():
            raise MissingFileError(f"stimulus folder {self.folder} not found; expected a folder of image files "
                                   f"({' '.join(IMAGE_SUFFIXES)})")
        files = sorted(path.relative_to(self.folder).as_posix() for path in self.folder.rglob("*")
                       if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()
                       and not _is_hidden(path.relative_to(self.folder)))
        if not files:
            raise MissingFileError(f"stimulus folder {self.folder} holds no image file "
                                   f"({' '.join(IMAGE_SUFFIXES)}); put the images the subjects saw there")
        return files

    @cached_property
    def _index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self._files)}

    @property
    def captions_path(self) -> Path:
        """``<folder>/captions.tsv`` (it may not exist)."""
        return self.folder / CAPTIONS_FILE

    def ids(self) -> np.ndarray:
        """Every image id, ``0 .. n_images - 1``, int64."""
        return np.arange(len(self._files), dtype=np.int64)

    def _lookup(self, value: str) -> int | None:
        text = _normalised(value)
        found = self._index.get(text)
        if found is None and text.startswith(_STIMULI_PREFIX):
            found = self._index.get(text[len(_STIMULI_PREFIX):])
        return found

    def ids_of(self, stim_files: Sequence[str], where: str) -> np.ndarray:
        """The id of each ``stim_file`` (a path relative to the folder; a leading ``stimuli/`` is accepted).

        Parameters
        ----------
        stim_files : sequence of str, length n
        where : str
            Where the values come from, for the error (``"sub-01_..._events.tsv column 'stim_file'"``).

        Returns
        -------
        array of shape (n,), int64

        Raises
        ------
        DataFormatError
            Naming ``where``, the first unknown value and the folder.
        """
        ids = np.empty(len(stim_files), dtype=np.int64)
        for row, value in enumerate(stim_files):
            found = self._lookup(value)
            if found is None:
                unknown = sum(self._lookup(v) is None for v in stim_files)
                more = f" ({unknown - 1} more unknown values)" if unknown > 1 else ""
                raise DataFormatError(f"{where}: {value!r} is not an image file of {self.folder}{more}; expected a "
                                      f"path relative to it such as {self._files[0]!r}")
            ids[row] = found
        return ids

    def _require_ids(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        bad = ids[(ids < 0) | (ids >= len(self._files))]
        if len(bad):
            raise DataFormatError(f"{self.folder}: {len(self._files)} images (ids 0..{len(self._files) - 1}); ids "
                                  f"{np.unique(bad)[:5].tolist()} are out of range")
        return ids

    def names(self, ids: Sequence[int] | np.ndarray) -> list[str]:
        """The relative path of each id's file."""
        return [self._files[i] for i in self._require_ids(ids).tolist()]

    def _read(self, name: str) -> np.ndarray:
        """One image, centre-cropped to a square and resized: (image_size, image_size, 3) uint8."""
        from PIL import Image, ImageOps

        path = self.folder / name
        try:
            with Image.open(path) as opened:
                image = ImageOps.exif_transpose(opened).convert("RGB")
                square = ImageOps.fit(image, (self.image_size, self.image_size),
                                      method=Image.Resampling.LANCZOS, centering=(0.5, 0.5))
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
            raise _open_error(path, error) from error
        return np.asarray(square, dtype=np.uint8)

    def images(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """The images of ``ids`` in the order asked (duplicates allowed).

        Returns
        -------
        array of shape (n_images, image_size, image_size, 3), uint8
        """
        ids = self._require_ids(ids)
        unique, inverse = np.unique(ids, return_inverse=True)
        out = np.zeros((len(unique), self.image_size, self.image_size, 3), dtype=np.uint8)
        for row, image_id in enumerate(unique.tolist()):
            out[row] = self._read(self._files[image_id])
        return out[inverse.reshape(-1)]

    def batches(self, ids: Sequence[int] | np.ndarray, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(batch_ids, images)`` of the sorted unique ``ids``, ``batch_size`` at a time."""
        unique = np.unique(self._require_ids(ids))
        for start in range(0, len(unique), int(batch_size)):
            batch = unique[start:start + int(batch_size)]
            yield batch, self.images(batch)

    def has_captions(self) -> bool:
        """Whether ``<folder>/captions.tsv`` exists."""
        return self.captions_path.is_file()

    def _how_to_add(self) -> str:
        return f"add rows `stim_file<TAB>caption` to {self.captions_path}; several per image allowed"

    def _read_captions(self) -> dict[int, list[str]]:
        """Captions by id from ``captions.tsv`` (rows of unknown files ignored, ``n/a`` and empty ones skipped)."""
        import pandas as pd

        path = self.captions_path
        if not path.is_file():
            raise MissingFileError(f"{path} not found: the c target needs captions of every image; "
                                   f"{self._how_to_add()}")
        try:
            table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False,
                                quoting=csv.QUOTE_NONE)
        except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as error:
            raise DataFormatError(f"{path}: cannot be read as a tab-separated table "
                                  f"({str(error).splitlines()[0]}); expected columns stim_file, caption") from error
        missing = [c for c in ("stim_file", "caption") if c not in table.columns]
        if missing:
            raise DataFormatError(f"{path}: no column {missing[0]!r} (found {list(table.columns)}); expected a "
                                  "header row `stim_file<TAB>caption`")
        by_id: dict[int, list[str]] = {}
        for stim_file, caption in zip(table["stim_file"], table["caption"]):
            image_id, text = self._lookup(stim_file), caption.strip()
            if image_id is not None and text and text != "n/a":
                by_id.setdefault(image_id, []).append(text)
        return by_id

    def captions(self, ids: Sequence[int] | np.ndarray) -> list[list[str]]:
        """The captions of each id (at least one each, in file order), every id checked first.

        Raises
        ------
        MissingFileError
            No ``captions.tsv``.
        DataFormatError
            An unreadable table, or an id without a caption (naming its file and how to add them).
        """
        ids = self._require_ids(ids)
        by_id = self._read_captions()
        absent = [i for i in ids.tolist() if i not in by_id]
        if absent:
            more = f" (and {len(set(absent)) - 1} more images)" if len(set(absent)) > 1 else ""
            raise DataFormatError(f"{self.captions_path}: no caption for {self._files[absent[0]]}{more}; "
                                  f"{self._how_to_add()}")
        return [list(by_id[i]) for i in ids.tolist()]

    def check(self, ids: Sequence[int] | np.ndarray) -> None:
        """Raise a one-line error unless every file of ``ids`` exists and Pillow reads its header (no pixels)."""
        from PIL import Image

        for name in dict.fromkeys(self.names(ids)):
            path = self.folder / name
            if not path.is_file():
                raise MissingFileError(f"stimulus image {path} not found (listed earlier in {self.folder}); "
                                       "put it back or prepare again")
            try:
                with Image.open(path):  # parses the header only
                    pass
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
                raise _open_error(path, error) from error

    def fingerprint(self) -> str:
        """``"<n_images>:<sha256>"`` over the image side, the sorted (relative path, file size) and the captions.

        The side (``image_size``) is part of it: images read at another side make other features.
        """
        digest = hashlib.sha256(f"image_size\t{self.image_size}\n".encode())
        for name in self._files:
            digest.update(f"{name}\t{(self.folder / name).stat().st_size}\n".encode())
        digest.update(b"captions\n")
        if self.captions_path.is_file():
            digest.update(self.captions_path.read_bytes())
        return f"{len(self._files)}:{digest.hexdigest()}"

    def content_keys(self, ids: Sequence[int] | np.ndarray) -> list[str]:
        """``"sha256:<hex>"`` of each id's file bytes (streamed, no decoding): an image's identity across data sets.

        Raises
        ------
        MissingFileError
            A file of ``ids`` is gone.
        """
        keys = []
        for name in self.names(ids):
            path = self.folder / name
            try:
                with path.open("rb") as handle:
                    keys.append(f"sha256:{hashlib.file_digest(handle, 'sha256').hexdigest()}")
            except FileNotFoundError:
                raise MissingFileError(f"stimulus image {path} not found (listed earlier in {self.folder}); "
                                       "put it back or prepare again") from None
        return keys

    def identity(self) -> dict[str, str]:
        """:meth:`origin` plus ``stimuli_identity`` (:meth:`fingerprint`)."""
        return {**self.origin(), "stimuli_identity": self.fingerprint()}

    def origin(self) -> dict[str, str]:
        """``{"stimuli": <resolved folder>}``."""
        return {"stimuli": str(self.folder.resolve())}

    def is_simulated(self) -> bool:
        """The constructor's ``simulated`` flag."""
        return self.simulated

    def describe(self) -> str:
        """``<label> (<folder>)``."""
        return f"{self.label} ({self.folder})"
