"""Small I/O helpers shared by every stage: atomic writes and data-home resolution."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import Brain2ImageError, OutputPathError, ResourceError

__all__ = ["atomic_path", "make_output_dir", "atomic_write_bytes", "atomic_write_text", "get_data_home", "is_disk_full",
           "disk_full_error", "remove_stale_temporaries"]

logger = logging.getLogger(__name__)

#: Temporary files of :func:`atomic_path`: ``.<final name>.<host>-<pid>.<random>.tmp<suffix>``.
_TEMPORARY = re.compile(r"^\.(?P<final>.+)\.(?P<host>[^.]+)-(?P<pid>[0-9]+)\.[^.]+\.tmp")

#: errno values of a write that found no room: no space, quota exceeded, file too large.
_DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def is_disk_full(error: BaseException) -> bool:
    """Whether ``error`` is a write that found no room (ENOSPC, EDQUOT, EFBIG; also as h5py words it)."""
    if not isinstance(error, OSError) or isinstance(error, Brain2ImageError):
        return False
    text = str(error)
    return error.errno in _DISK_FULL_ERRNOS or "errno = 28" in text or "No space left on device" in text


def disk_full_error(path: str | os.PathLike, error: OSError, kept: str) -> ResourceError:
    """The one-line error for a write to ``path`` that found no room; ``kept`` says what is left as it was."""
    reason = error.strerror or " ".join(str(error).split())
    return ResourceError(f"{path}: could not write it ({reason}); {kept}. Free some disk space (or choose "
                         "an output folder on another disk) and run the command again")


def make_output_dir(folder: str | os.PathLike, for_path: str | os.PathLike | None = None) -> Path:
    """Create ``folder`` (and its parents) for outputs (``for_path``: the file to be written in it); returns it.

    Raises
    ------
    OutputPathError
        Naming the folder when it cannot be created or written (a file in the way, no permission).
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        reason = error.strerror or " ".join(str(error).split())
        blocker = next((p for p in [folder, *folder.parents] if p.exists() and not p.is_dir()), None)
        why = f"{blocker} is a file, not a folder" if blocker is not None else reason
        what = f"{for_path}: cannot create its folder {folder}" if for_path else f"{folder}: cannot create it"
        raise OutputPathError(f"{what} ({why}); choose another output path (--out, or out_dir)") from None
    return folder


def _temporary_in(folder: Path, final_path: Path, suffix: str) -> str:
    """Create the temporary file of ``final_path`` in ``folder`` (:class:`OutputPathError` if it cannot)."""
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{final_path.name}.{_host()}-{os.getpid()}.",
                                        suffix=".tmp" + suffix, dir=folder)
    except OSError as error:
        if is_disk_full(error):
            raise disk_full_error(final_path, error, "nothing was written") from error
        reason = error.strerror or " ".join(str(error).split())
        raise OutputPathError(f"{final_path}: cannot write in {folder} ({reason}); choose another output path "
                              "(--out, or out_dir)") from None
    os.close(fd)
    return tmp_name


@contextlib.contextmanager
def atomic_path(final_path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``final_path``; rename it into place on success.

    On any exception the temporary file is removed and ``final_path`` is left untouched,
    so a killed or failed job never leaves a truncated output behind. A write that finds the disk
    full becomes a :class:`~brain2image.errors.ResourceError` naming ``final_path``.

    Parameters
    ----------
    final_path : path-like
        Where the finished file must end up.
    suffix : str, optional
        Suffix of the temporary file (defaults to the final file's suffix, so that
        libraries that dispatch on the extension, like nibabel, still work).
    """
    final_path = Path(final_path)
    make_output_dir(final_path.parent, final_path)
    suffix = "".join(final_path.suffixes) if suffix is None else suffix
    tmp_path = Path(_temporary_in(final_path.parent, final_path, suffix))
    # mkstemp creates 0600 files; give the output the permissions a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)
    try:
        yield tmp_path
        os.replace(tmp_path, final_path)
    except OSError as error:
        if not is_disk_full(error):
            raise
        kept = f"the previous {final_path.name} is unchanged" if final_path.exists() else "nothing was written"
        raise disk_full_error(final_path, error, kept) from error
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"


def _is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files that killed processes of this host left under ``folder``.

    A process killed by a signal (SIGKILL, the OOM killer, a lost node) never reaches the
    clean-up of :func:`atomic_path`; its temporary file is never taken for an output, and this
    removes it on the next run. Files of processes still running, or of other hosts sharing the
    folder, are left alone.

    Returns
    -------
    The removed paths.
    """
    folder, host = Path(folder), _host()
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for path in folder.rglob(".*.tmp*"):
        match = _TEMPORARY.match(path.name)
        if match and match["host"] == host and not _is_running(int(match["pid"])) and path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    if removed:
        logger.info("removed %d temporary file(s) of interrupted runs under %s", len(removed), folder)
    return removed


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
