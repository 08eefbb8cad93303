"""What one subject's run becomes on a cluster: per stage, its tasks and the resources each asks for.

A shardable stage with a merger (``features``, ``reconstruct``) becomes one task per shard of the
image ids, then a finishing task that merges the shards; ``fit`` becomes one task per target (z,
c), then a finishing task that records their times; every other stage is one task. Nothing here
imports Ray: :mod:`brain2image.cluster.ray_runner` submits the plan.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..config import RunConfig

if TYPE_CHECKING:
    from ..stages.base import Stage

__all__ = ["MERGED_STAGES", "FIT_TARGETS", "StageTask", "StagePlan", "uses_gpu", "stage_resources", "plan_subject"]

#: Shardable stages whose shards the finishing task knows how to merge.
MERGED_STAGES = ("features", "reconstruct")
#: The decoders of a run folder, one ``fit`` task each.
FIT_TARGETS = ("z", "c")


@dataclass(frozen=True)
class StageTask:
    """One task: ``stage`` in the run folder of ``config`` (one subject), on ``shard`` or for ``targets``."""

    config: RunConfig
    stage: str
    shard: tuple[int, int] | None = None
    targets: tuple[str, ...] | None = None

    @property
    def label(self) -> str:
        """``subject 1 features 2/4``, ``subject 2 fit z``: what the task is, in messages."""
        part = f" {self.shard[0]}/{self.shard[1]}" if self.shard else ""
        part += f" {','.join(self.targets)}" if self.targets else ""
        return f"subject {self.config.subject} {self.stage}{part}"


@dataclass(frozen=True)
class StagePlan:
    """One stage of one subject: its tasks, the shards to merge, and the resources of each task.

    Attributes
    ----------
    config : RunConfig
        The subject's one-subject config.
    stage : str
    tasks : tuple of StageTask
    n_shards : int or None
        The shards the finishing task merges (``None``: no merge).
    num_cpus, num_gpus : float
        What each task of the stage asks Ray for.
    """

    config: RunConfig
    stage: str
    tasks: tuple[StageTask, ...]
    n_shards: int | None
    num_cpus: float
    num_gpus: float

    @property
    def needs_finish(self) -> bool:
        """Whether a finishing task joins the tasks (merge, times): several tasks, or shards."""
        return len(self.tasks) > 1 or self.n_shards is not None


def uses_gpu(config: RunConfig) -> bool:
    """Whether the run's ``device`` is a CUDA device."""
    return str(config.device).startswith("cuda")


def stage_resources(stage: Stage, config: RunConfig, cpus_per_task: float) -> tuple[float, float]:
    """``(num_cpus, num_gpus)`` of a task of ``stage``: one GPU for a stage that reads ``device = "cuda"``."""
    gpus = 1.0 if uses_gpu(config) and "device" in stage.run_keys else 0.0
    return float(cpus_per_task), gpus


def _tasks(stage: Stage, config: RunConfig, n_shards: int) -> tuple[tuple[StageTask, ...], int | None]:
    """The tasks of one stage and the number of shards to merge (``None``: none)."""
    if stage.shardable and stage.name in MERGED_STAGES and n_shards > 1:
        return tuple(StageTask(config, stage.name, shard=(i, n_shards)) for i in range(1, n_shards + 1)), n_shards
    if stage.name == "fit":
        return tuple(StageTask(config, stage.name, targets=(target,)) for target in FIT_TARGETS), None
    return (StageTask(config, stage.name),), None


def plan_subject(config: RunConfig, stages: Sequence[Stage], n_shards: int,
                 cpus_per_task: float = 1) -> list[StagePlan]:
    """The enabled stages of one subject, in pipeline order, as :class:`StagePlan`.

    Parameters
    ----------
    config : RunConfig
        A one-subject config (its ``out_dir`` is the subject's run folder).
    stages : sequence of Stage
        The stages to run, in pipeline order (:func:`brain2image.pipeline.check_study`).
    n_shards : int
        Shards of the image ids of ``features`` and ``reconstruct`` (1: one task each).
    cpus_per_task : float
        CPUs each task asks for.
    """
    plans = []
    for stage in stages:
        if not stage.enabled(config):
            continue
        tasks, shards = _tasks(stage, config, n_shards)
        cpus, gpus = stage_resources(stage, config, cpus_per_task)
        plans.append(StagePlan(config, stage.name, tasks, shards, cpus, gpus))
    return plans
