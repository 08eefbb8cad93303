"""``brain2image run CONFIG --ray [ADDRESS]``: a run (one subject or several) as Ray tasks.

Per subject the stages run in pipeline order; each stage runs as the tasks it splits into
(:meth:`Stage.tasks <brain2image.stages.Stage.tasks>`: steps of tasks that run at once), then, when
it split into more than one, a task that joins them (:meth:`Stage.finish
<brain2image.stages.Stage.finish>`) (:mod:`brain2image.cluster.plan`). The tasks of a stage wait
for the previous stage's through Ray's own dependencies, so several subjects run at once as far as
the cluster's resources allow. Every task works in the run folder, which must be on a filesystem
shared by every node; a stage already done is skipped, a finished piece is kept, so a retried or
resumed task redoes only what is missing. The study summary is written at the end, as
:func:`brain2image.pipeline.run_study` writes it.

Ray is an optional dependency (``pip install brain2image[ray]``), imported only here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..config import RunConfig
from ..errors import Brain2ImageError, InvalidArgumentError
from .plan import StagePlan, plan_subject, uses_gpu
from .tasks import TransientTaskError, finish_task, run_task

__all__ = ["LOCAL", "FORWARDED_ENV", "ClusterUnreachableError", "ClusterTaskError", "ray_session", "default_shards",
           "run_on_ray"]

logger = logging.getLogger(__name__)

#: ``--ray`` without an address: start a local Ray with this machine's CPUs.
LOCAL = "local"
#: Environment variables the driver hands to the workers (when it starts or joins the session).
FORWARDED_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME", "HF_HUB_CACHE", "BRAIN2IMAGE_DATA", "NSD_ROOT")
#: Seconds to wait for a head node's port to answer.
CONNECT_TIMEOUT_S = 5.0


class ClusterUnreachableError(InvalidArgumentError):
    """No Ray cluster answers at the address given to ``--ray``."""


class ClusterTaskError(Brain2ImageError, RuntimeError):
    """A Ray task failed after its retries (or its worker was lost) on an error that is not bad input."""


def _import_ray() -> Any:
    """The ``ray`` module.

    Raises
    ------
    InvalidArgumentError
        When Ray is not installed.
    """
    try:
        import ray
    except ImportError as error:
        raise InvalidArgumentError("--ray: Ray is not installed; expected `pip install brain2image[ray]`") from error
    return ray


def _check_reachable(address: str) -> None:
    """Refuse a ``host:port`` (or ``ray://host:port``) whose port does not answer (``auto`` is Ray's to find).

    Raises
    ------
    ClusterUnreachableError
        Naming the address and why.
    """
    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except (OSError, ValueError) as error:
        raise ClusterUnreachableError(
            f"--ray {address}: no Ray cluster reachable there ({type(error).__name__}: {error}); expected "
            "host:port of a running head node (ray start --head), 'auto' on a node of the cluster, or no "
            "address for a local Ray") from error


@contextlib.contextmanager
def ray_session(address: str | None = None, *, num_cpus: int | None = None, progress: bool = True) -> Iterator[Any]:
    """Ray for the block: a session already started in this process, a joined cluster, or a local Ray.

    Parameters
    ----------
    address : str, optional
        ``None`` or ``"local"``: start a local Ray (``num_cpus``, default this machine's CPUs);
        ``"auto"`` or ``host:port``: join that cluster (checked before anything else).
    num_cpus : int, optional
        CPUs of a local Ray.
    progress : bool
        Forward the workers' output to this process.

    Yields
    ------
    The ``ray`` module. A session this function started or joined is shut down (left) at the end.

    Raises
    ------
    ClusterUnreachableError
        When no cluster answers at ``address``.
    """
    ray = _import_ray()
    local = address in (None, LOCAL)
    if not local:
        _check_reachable(str(address))
    if ray.is_initialized():
        yield ray
        return
    env = {name: os.environ[name] for name in FORWARDED_ENV if name in os.environ}
    options: dict[str, Any] = {"log_to_driver": progress, "runtime_env": {"env_vars": env},
                               "logging_level": logging.INFO if progress else logging.WARNING}
    try:
        if local:
            ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, **options)
        else:
            ray.init(address=address, **options)
    except (ConnectionError, TimeoutError, RuntimeError, ValueError) as error:
        raise ClusterUnreachableError(f"--ray {address or LOCAL}: could not start or join Ray "
                                      f"({type(error).__name__}: {' '.join(str(error).split())})") from error
    try:
        yield ray
    finally:
        ray.shutdown()


def default_shards(ray: Any, config: RunConfig, cpus_per_task: float = 1) -> int:
    """Shards a stage may split into: the cluster's GPUs with ``device = "cuda"``, else its CPUs per task.

    Raises
    ------
    InvalidArgumentError
        For ``device = "cuda"`` on a cluster without a GPU (its tasks could never be placed).
    """
    resources = ray.cluster_resources()
    if uses_gpu(config):
        gpus = int(resources.get("GPU", 0))
        if gpus < 1:
            raise InvalidArgumentError(f"device = {config.device!r}: the Ray cluster has no GPU; expected GPU "
                                       "workers (ray start --num-gpus) or device = 'cpu'")
        return gpus
    return max(1, int(resources.get("CPU", 1) // cpus_per_task))


def _submit(ray: Any, plans: Sequence[StagePlan], *, max_retries: int, threads: int) -> dict[Any, str]:
    """Submit every task of one subject's stages, each stage waiting for the previous; returns ref -> label.

    Every task computes with ``threads`` torch and BLAS threads (:mod:`brain2image.threads`).
    """
    remote_run, remote_finish = ray.remote(run_task), ray.remote(finish_task)
    labels: dict[Any, str] = {}
    after: list[Any] = []
    for plan in plans:
        options = {"num_cpus": plan.num_cpus, "num_gpus": plan.num_gpus, "max_retries": max_retries,
                   "retry_exceptions": [TransientTaskError]}
        stage_refs: list[Any] = []
        for step in plan.steps:
            after = [remote_run.options(name=task.label, **options).remote(task, threads, *after)
                     for task in step]
            labels.update(zip(after, (task.label for task in step)))
            stage_refs += after
        if plan.needs_finish:
            finish = remote_finish.options(name=plan.finish_label, **options).remote(
                plan.stage, plan.config, plan.specs, *stage_refs, threads=threads)
            labels[finish] = plan.finish_label
            after = [finish]
    return labels


def _task_error(ray: Any, error: Exception, label: str) -> Brain2ImageError:
    """The one-line error of a failed task: its own bad-input error, else :class:`ClusterTaskError`."""
    cause = getattr(error, "cause", None) if isinstance(error, ray.exceptions.RayTaskError) else None
    if isinstance(cause, Brain2ImageError):
        return cause
    detail = cause if cause is not None else error
    text = " ".join(str(detail).split())[:400]
    return ClusterTaskError(f"Ray task {label!r} failed after its retries: {type(detail).__name__}: {text}")


def _wait_all(ray: Any, labels: dict[Any, str], progress: bool) -> None:
    """Wait for every task (one progress bar over finished tasks); on a failure cancel the rest and raise it."""
    from tqdm.auto import tqdm

    pending = list(labels)
    with tqdm(total=len(pending), desc="Ray tasks", unit="task", disable=not progress) as bar:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            try:
                ray.get(done[0])
            except Exception as error:
                for ref in pending:
                    ray.cancel(ref)
                raise _task_error(ray, error, labels[done[0]]) from None
            bar.set_postfix_str(labels[done[0]], refresh=False)
            bar.update(1)


def run_on_ray(config: RunConfig, address: str | None = None, *, num_cpus: int | None = None,
               n_shards: int | None = None, cpus_per_task: int = 1, max_retries: int = 3, progress: bool = True,
               stages: Sequence[str] | None = None, target_parts: int | None = None,
               redo: Sequence[str] = ()) -> Path:
    """Run (or resume) a run config's stages as Ray tasks; the outputs are those of :func:`run_pipeline`.

    Parameters
    ----------
    config : RunConfig
        One subject, or several (``subjects``: one folder each, then the study summary).
    address : str, optional
        ``None`` / ``"local"``: a local Ray of ``num_cpus`` CPUs; ``"auto"`` or ``host:port``: join
        that cluster. A session already started in this process is used as it is.
    num_cpus : int, optional
        CPUs of a local Ray (default: this machine's).
    n_shards : int, optional
        Shards of the image ids a stage may split into, per subject (``Split.shards``; default
        :func:`default_shards`).
    cpus_per_task : int
        CPUs each task asks for. Not its threads: every task computes with the config's ``threads``,
        else the count a plain run would use on this machine (:mod:`brain2image.threads`), so that
        the outputs are those of one process.
    max_retries : int
        Retries of a task whose worker died or that raised a transient error (never for bad input).
    progress : bool
        A progress bar over finished tasks.
    stages : sequence of str, optional
        Only these stages (by name).
    target_parts : int, optional
        Parts of a decoder's targets a stage may split its fits into (``Split.target_parts``; default:
        the shards).
    redo : sequence of str
        Stages to recompute with every stage after them; their old outputs are removed first.

    Returns
    -------
    Path of the run's HTML page (:func:`brain2image.pipeline.report_path`; the study's with ``subjects``).

    Raises
    ------
    InvalidArgumentError, DataFormatError, MissingFileError
        Before anything is written, as :func:`brain2image.pipeline.run_study`.
    ClusterUnreachableError
        Before anything is written, when no cluster answers at ``address``.
    ClusterTaskError
        When a task fails after its retries (a task's own bad-input error is raised as it is).
    """
    from ..pipeline import check_study, report_path, start_run_folder, start_study
    from ..stages import StageContext
    from ..stages.recorded_settings import remove_redone_outputs
    from ..study_summary import write_study_summary
    from ..threads import resolve_threads

    chosen = check_study(config, stages, redo)
    with ray_session(address, num_cpus=num_cpus, progress=progress) as ray:
        default = default_shards(ray, config, cpus_per_task)  # refuses "cuda" on a cluster without a GPU
        shards = n_shards or default
        configs = start_study(config) if config.subjects is not None else [config]
        labels: dict[Any, str] = {}
        for single in configs:
            start_run_folder(single)
            remove_redone_outputs(StageContext(single, progress=False), chosen, redo)
            plans = plan_subject(single, chosen, shards, cpus_per_task, target_parts)
            labels.update(_submit(ray, plans, max_retries=max_retries, threads=resolve_threads(single.threads)))
        logger.info("%d Ray tasks for %d subject(s), %d shard(s) each", len(labels), len(configs), shards)
        _wait_all(ray, labels, progress)
    if config.subjects is not None:
        return write_study_summary(config.out_dir, [single.subject for single in configs])
    return report_path(config)
