"""Small I/O helpers shared by every stage: atomic writes and data-home resolution."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text", "get_data_home"]


@contextlib.contextmanager
def atomic_path(final_path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``final_path``; rename it into place on success.

    On any exception the temporary file is removed and ``final_path`` is left untouched,
    so a killed or failed job never leaves a truncated output behind.

    Parameters
    ----------
    final_path : path-like
        Where the finished file must end up.
    suffix : str, optional
        Suffix of the temporary file (defaults to the final file's suffix, so that
        libraries that dispatch on the extension, like nibabel, still work).
    """
    final_path = Path(final_path)
    final_path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(final_path.suffixes) if suffix is None else suffix
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final_path.name}.", suffix=".tmp" + suffix,
                                    dir=final_path.parent)
    os.close(fd)
    tmp_path = Path(tmp_name)
    # mkstemp creates 0600 files; give the output the permissions a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)
    try:
        yield tmp_path
        os.replace(tmp_path, final_path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def get_data_home(data_home: str | os.PathLike | None = None) -> Path:
    """Resolve where brain2image keeps derived data.

    Order: the explicit argument, then ``$BRAIN2IMAGE_DATA``, then ``~/.cache/brain2image``.
    """
    if data_home is None:
        data_home = os.environ.get("BRAIN2IMAGE_DATA") or Path.home() / ".cache" / "brain2image"
    return Path(data_home).expanduser().resolve()
