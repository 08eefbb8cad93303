"""What a cluster worker runs: one task of a stage in a run folder, and a stage's finishing step.

Both are plain functions (Ray wraps them in :mod:`brain2image.cluster.ray_runner`), so they run,
and are tested, without Ray. Errors that a retry may not meet again (I/O, a lost connection, a
CUDA runtime error) leave as :class:`TransientTaskError`, which the runner retries; the project's
bad-input errors (:class:`~brain2image.errors.Brain2ImageError`) leave as they are and are not retried.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from ..config import RunConfig
from ..errors import Brain2ImageError
from ..formats.run_layout import RunLayout
from .plan import PARTED_TARGETS, StageTask

__all__ = ["TRANSIENT_ERRORS", "TransientTaskError", "retry_transient", "run_task", "finish_stage",
           "merge_stage_shards", "assemble_encoding"]

logger = logging.getLogger(__name__)

#: Errors a retry may not meet again (a Brain2ImageError among them is bad input: never retried).
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (OSError, RuntimeError, TimeoutError, ConnectionError)


class TransientTaskError(RuntimeError):
    """A task failed on an error a retry may not meet again (:data:`TRANSIENT_ERRORS`); the runner retries it."""


@contextlib.contextmanager
def retry_transient(label: str) -> Iterator[None]:
    """Turn a transient error of the block into :class:`TransientTaskError` (``label: Type: message``).

    A :class:`~brain2image.errors.Brain2ImageError` (bad input, out of memory) passes unchanged.
    """
    try:
        yield
    except Brain2ImageError:
        raise
    except TRANSIENT_ERRORS as error:
        raise TransientTaskError(f"{label}: {type(error).__name__}: {error}") from error


def _set_threads(config: RunConfig, threads: int) -> None:
    """Torch threads of the task: the config's ``threads``, else the task's CPUs."""
    import torch

    torch.set_num_threads(int(config.threads or max(1, threads)))


def run_task(task: StageTask, threads: int = 1, *after: Any) -> dict[str, float]:
    """Run one task of a stage in its subject's run folder (skipped when the stage is done).

    Parameters
    ----------
    task : StageTask
    threads : int
        Torch threads (the CPUs the task holds) unless the config sets ``threads``.
    *after : any
        Results of the tasks this one waits for (unused: they only order the tasks).

    Returns
    -------
    dict
        The task's stage times when a finishing task joins it (``task.joined``: that task records
        their sum); empty otherwise (the task recorded its times in ``timings.json`` itself).
    """
    from ..stages import StageContext, Timings, get_stage, run_stage

    _set_threads(task.config, threads)
    layout = RunLayout.of(task.config.out_dir, task.config.subject, task.config.model)
    timings = Timings(None if task.joined else layout.file("timings"))
    ctx = StageContext(task.config, extra=task.extra, progress=False, timings=timings)
    with retry_transient(task.label):
        run_stage(get_stage(task.stage), ctx, task.shard)
    return dict(timings.values) if task.joined else {}


def merge_stage_shards(stage_name: str, config: RunConfig, n_shards: int) -> None:
    """Merge the ``n_shards`` shards of ``features`` (its stores) or ``reconstruct`` (its folder), or parts of ``fit``.

    Feature stores already complete are kept; then the features record (``config.json``) is
    written as a run without shards writes it. For ``fit``, the ``n_shards`` parts of the
    :data:`~brain2image.cluster.plan.PARTED_TARGETS` decoders are joined (a decoder already there is kept).

    Raises
    ------
    DataFormatError, MissingFileError
        A missing shard, or shards that disagree (from the existing merges).
    """
    from ..formats.feature_store import merge_feature_shards
    from ..formats.recon_index import ReconFolder
    from ..stages import StageContext, get_stage
    from ..stages.fit import FitStage

    stage = get_stage(stage_name)
    if isinstance(stage, FitStage):
        stage.merge_parts(StageContext(config, extra={"targets": PARTED_TARGETS}, progress=False), n_shards)
        return
    ctx = StageContext(config, progress=False)
    if stage_name == "reconstruct":
        ReconFolder(stage.outputs(ctx)["recon"]).merge_shards(n_shards)
        return
    for path in stage.outputs(ctx).values():
        if not Path(path).is_file():
            merge_feature_shards(path, n_shards)
            logger.info("merged %d shards into %s", n_shards, path)
    stage.run(ctx)


def assemble_encoding(config: RunConfig, timings: Any) -> None:
    """Join the parts of ``encode`` (one per feature space and pair) into its results, unless they are there.

    Raises
    ------
    DataFormatError, MissingFileError
        A missing part, or parts of other inputs (:func:`~brain2image.encoding.parts.assemble_encoding_parts`).
    """
    from ..stages import StageContext, get_stage, run_stage

    run_stage(get_stage("encode"), StageContext(config, extra={"encoding_part": "assemble"}, progress=False,
                                                timings=timings))


def finish_stage(stage_name: str, config: RunConfig, n_shards: int | None, *task_times: Mapping[str, float]) -> None:
    """Join a stage's tasks: merge its shards or parts, assemble ``encode``; record their times in ``timings.json``.

    The time of each part is the sum over the tasks (worker seconds, as a run on one machine
    records them).

    Raises
    ------
    DataFormatError, MissingFileError
        From :func:`merge_stage_shards` or :func:`assemble_encoding`.
    """
    from ..stages import Timings

    with retry_transient(f"subject {config.subject} {stage_name} (finish)"):
        own = Timings()
        if stage_name == "encode":
            assemble_encoding(config, own)
        elif n_shards is not None:
            merge_stage_shards(stage_name, config, n_shards)
        totals: dict[str, float] = {}
        for times in (*task_times, own.values):
            for name, seconds in times.items():
                totals[name] = totals.get(name, 0.0) + float(seconds)
        timings = Timings(RunLayout.of(config.out_dir, config.subject, config.model).file("timings"))
        for name, seconds in totals.items():
            timings.record(name, seconds)
