"""Read GLMsingle's ``.npy`` outputs (a pickled dict of arrays) without arbitrary unpickling.

GLMsingle's Python code saves each output type with ``np.save(path, dict)``: a ``.npy`` file holding
a 0-d object array whose pickle is a dict of arrays. ``np.load(allow_pickle=True)`` would run any
code the pickle names; :class:`ArrayDictUnpickler` instead resolves only numpy's array
reconstruction classes and refuses every other global with a one-line error.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib import format as npy_format

from ...errors import DataFormatError, MissingFileError

__all__ = ["ALLOWED_GLOBALS", "ArrayDictUnpickler", "load_array_dict"]

#: The only globals a pickled dict of numpy arrays and scalars needs (numpy 1.x and 2.x module names;
#: ``_codecs.encode`` carries array bytes in protocol-2 pickles).
ALLOWED_GLOBALS = frozenset({
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
})


class ArrayDictUnpickler(pickle.Unpickler):
    """An unpickler that builds numpy arrays, scalars and builtin containers, and nothing else.

    Parameters
    ----------
    file : binary file
        The pickle stream.
    where : str
        The file, for the error.
    """

    def __init__(self, file: io.BufferedIOBase | io.BytesIO, where: str) -> None:
        super().__init__(file)
        self.where = where

    def find_class(self, module: str, name: str) -> Any:
        """The global ``module.name`` when it is in :data:`ALLOWED_GLOBALS`.

        Raises
        ------
        DataFormatError
            For any other global (it is never imported).
        """
        if (module, name) in ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise DataFormatError(f"{self.where}: the pickle names {module}.{name}, which is not a numpy array class; "
                              "refusing to unpickle it (expected GLMsingle's dict of arrays, e.g. betasmd)")


def _read_header(handle: io.BufferedReader, where: str) -> np.dtype:
    try:
        version = npy_format.read_magic(handle)
        reader = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
        _, _, dtype = reader(handle)
    except (ValueError, OSError) as error:
        raise DataFormatError(f"{where}: not a .npy file ({' '.join(str(error).split())}); expected GLMsingle's "
                              "output saved with numpy.save") from None
    return dtype


def load_array_dict(path: str | os.PathLike) -> dict[str, Any]:
    """The dict of arrays that ``np.save(path, dict)`` wrote, unpickled with :class:`ArrayDictUnpickler`.

    Parameters
    ----------
    path : path-like
        A ``.npy`` file holding a pickled dict (GLMsingle's ``TYPED_FITHRF_GLMDENOISE_RR.npy``).

    Returns
    -------
    dict of str to array

    Raises
    ------
    MissingFileError
        The file is missing.
    DataFormatError
        Not a ``.npy`` of a pickled dict, or its pickle names a class other than numpy's arrays.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: GLMsingle output not found; expected TYPED_FITHRF_GLMDENOISE_RR.npy")
    with path.open("rb") as handle:
        dtype = _read_header(handle, str(path))
        if not dtype.hasobject:
            raise DataFormatError(f"{path}: a plain {dtype} array, not GLMsingle's dict of outputs; expected the "
                                  "file GLMsingle saved (a dict holding betasmd)")
        try:
            value = ArrayDictUnpickler(handle, str(path)).load()
        except DataFormatError:
            raise
        except Exception as error:  # a truncated or foreign pickle raises many kinds
            raise DataFormatError(f"{path}: its pickle cannot be read ({type(error).__name__}); expected "
                                  "GLMsingle's dict of arrays") from None
    value = value[()] if isinstance(value, np.ndarray) and value.shape == () else value
    if not isinstance(value, dict):
        raise DataFormatError(f"{path}: holds a {type(value).__name__}, not GLMsingle's dict of outputs; expected "
                              "a dict holding betasmd")
    return value
