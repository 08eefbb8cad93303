"""What a cluster worker runs: one task of a stage in a run folder, and a stage's finishing task.

Both are plain functions (Ray wraps them in :mod:`brain2image.cluster.ray_runner`), so they run,
and are tested, without Ray. Only errors that can pass on a second try (:func:`is_transient`: a
lost connection or timeout, a full disk, a stale NFS handle, a worker or node Ray lost) leave as
:class:`TransientTaskError`, which the runner retries; any other error (a bug, a shape mismatch, the
project's bad-input errors, :class:`~brain2image.errors.Brain2ImageError`) leaves as it is and is
reported once. Each first imports the run config's ``plugins``
(:func:`brain2image.plugins.import_plugins`), so a worker knows the sources, targets, methods and
stages the run's plug-ins register.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .._io import is_disk_full
from ..config import RunConfig
from ..errors import Brain2ImageError
from ..formats.run_layout import RunLayout
from ..plugins import import_plugins
from ..threads import pinned_threads
from .plan import StageTask

if TYPE_CHECKING:
    from ..stages.base import Stage
    from ..stages.tasks import TaskSpec

__all__ = ["TRANSIENT_ERRORS", "TRANSIENT_ERRNOS", "TransientTaskError", "is_transient", "retry_transient",
           "run_task", "finish_task"]

logger = logging.getLogger(__name__)

#: Error types that can pass on a second try (``BrokenPipeError``, ``ConnectionResetError``, ... are
#: connection errors too).
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError)
#: ``errno`` of an ``OSError`` that can pass: a stale NFS handle, a resource busy for now (a full
#: disk or quota is :func:`~brain2image._io.is_disk_full`).
TRANSIENT_ERRNOS = frozenset({errno.ESTALE, errno.EAGAIN})
#: Ray's errors for a worker, node or object lost (named here, so that Ray is imported only when used).
_RAY_LOST = ("WorkerCrashedError", "NodeDiedError", "LocalRayletDiedError", "ObjectLostError")


class TransientTaskError(RuntimeError):
    """A task failed on an error that can pass on a second try (:func:`is_transient`); the runner retries it."""


def _ray_lost_errors() -> tuple[type[BaseException], ...]:
    """Ray's lost-worker / lost-node error types, when Ray is imported (empty otherwise)."""
    ray = sys.modules.get("ray")
    exceptions = getattr(ray, "exceptions", None)
    return tuple(kind for name in _RAY_LOST if isinstance(kind := getattr(exceptions, name, None), type))


def is_transient(error: BaseException) -> bool:
    """Whether ``error`` can pass on a second try (a retry is worth it); a bug or bad input cannot.

    Transient: :data:`TRANSIENT_ERRORS` (a lost connection, a timeout, a broken pipe), an ``OSError``
    of a full disk (``ENOSPC``, quota) or of :data:`TRANSIENT_ERRNOS` (``ESTALE``), and Ray's errors
    for a worker or node lost. Never: a :class:`~brain2image.errors.Brain2ImageError`, a plain
    ``RuntimeError`` or ``ValueError``, any other ``OSError``.
    """
    if isinstance(error, Brain2ImageError):
        return False
    if isinstance(error, TRANSIENT_ERRORS + _ray_lost_errors()):
        return True
    return isinstance(error, OSError) and (error.errno in TRANSIENT_ERRNOS or is_disk_full(error))


@contextlib.contextmanager
def retry_transient(label: str) -> Iterator[None]:
    """Turn a transient error of the block (:func:`is_transient`) into :class:`TransientTaskError`.

    The message is ``label: Type: message``; any other error passes unchanged (reported once).
    """
    try:
        yield
    except Exception as error:
        if not is_transient(error):
            raise
        raise TransientTaskError(f"{label}: {type(error).__name__}: {error}") from error


def _timings_file(config: RunConfig) -> Any:
    """The run folder's ``timings.json``."""
    return RunLayout.of(config.out_dir, config.subject, config.model).file("timings")


def run_task(task: StageTask, threads: int = 1, *after: Any) -> dict[str, float]:
    """Run one task of a stage in its subject's run folder (skipped when the stage is done).

    Parameters
    ----------
    task : StageTask
        The stage runs with the task's shard, in a context whose ``part`` is the task's part.
    threads : int
        Torch and BLAS threads unless the config sets ``threads``: the count the run's driver
        resolved (:func:`brain2image.threads.resolve_threads`), not the CPUs the task holds.
    *after : any
        Results of the tasks this one waits for (unused: they only order the tasks).

    Returns
    -------
    dict
        The task's stage times when a finishing task joins it (``task.joined``: that task records
        their sum); empty otherwise (the task recorded its times in ``timings.json`` itself).
    """
    from ..stages import StageContext, Timings, run_stage

    import_plugins(task.config.plugins)  # a worker registers the run's plug-ins before its task runs
    timings = Timings(None if task.joined else _timings_file(task.config))
    ctx = StageContext(task.config, part=task.spec.part, progress=False, timings=timings)
    with retry_transient(task.label), pinned_threads(task.config.threads or max(1, threads)):
        run_stage(task.stage, ctx, task.spec.shard)
    return dict(timings.values) if task.joined else {}


def finish_task(stage: Stage, config: RunConfig, specs: Sequence[TaskSpec], *task_times: Mapping[str, float],
                threads: int = 1) -> None:
    """Join a stage's tasks (:func:`~brain2image.stages.finish_stage`); record their times in ``timings.json``.

    The time of each part is the sum over the tasks and the join (worker seconds, as a run on one
    machine records them).

    Parameters
    ----------
    stage : Stage
    config : RunConfig
        The subject's one-subject config.
    specs : sequence of TaskSpec
        The pieces of every task of the stage (:attr:`StagePlan.specs`).
    *task_times : mapping
        What each task returned (:func:`run_task` of a joined task).
    threads : int
        As in :func:`run_task`.

    Raises
    ------
    DataFormatError, MissingFileError
        From the stage's join: a missing piece, or pieces that disagree.
    """
    from ..stages import StageContext, Timings, finish_stage

    import_plugins(config.plugins)
    with retry_transient(f"subject {config.subject} {stage.name} (finish)"), \
            pinned_threads(config.threads or max(1, threads)):
        own = Timings()
        finish_stage(stage, StageContext(config, progress=False, timings=own), specs)
        totals: dict[str, float] = {}
        for times in (*task_times, own.values):
            for name, seconds in times.items():
                totals[name] = totals.get(name, 0.0) + float(seconds)
        timings = Timings(_timings_file(config))
        for name, seconds in totals.items():
            timings.record(name, seconds)
