"""What one subject's run becomes on a cluster: per stage, its tasks and the resources each asks for.

A shardable stage with a merger (``features``, ``reconstruct``) becomes one task per shard of the
image ids, then a finishing task that merges the shards; ``fit`` becomes one task for z and one
task per part of the c targets (:mod:`brain2image.decoding.parts`), then a finishing task that
merges the c parts and records their times; ``encode`` becomes a task that computes the z_c /
U-Net feature stores (when the config names them), one task per feature space and per partitioned
pair (:mod:`brain2image.encoding.parts`), then a finishing task that assembles the results; every
other stage is one task. Nothing here imports Ray: :mod:`brain2image.cluster.ray_runner` submits
the plan.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..config import RunConfig

if TYPE_CHECKING:
    from ..stages.base import Stage

__all__ = ["MERGED_STAGES", "FIT_TARGETS", "PARTED_TARGETS", "StageTask", "StagePlan", "uses_gpu", "stage_resources",
           "plan_subject"]

#: Shardable stages whose shards the finishing task knows how to merge.
MERGED_STAGES = ("features", "reconstruct")
#: The decoders of a run folder, one ``fit`` task each.
FIT_TARGETS = ("z", "c")
#: The decoders whose targets are fitted in parts (c: 77 × 768 targets at SD v1.4's size).
PARTED_TARGETS = ("c",)


@dataclass(frozen=True)
class StageTask:
    """One task: ``stage`` in the run folder of ``config`` (one subject), on ``shard`` or for ``targets``.

    ``target_part`` ``(i, n)``: only part ``i`` of ``n`` of the targets' columns (``fit``).
    ``encoding_part``: one piece of ``encode`` (``features_zc``, a feature space or a pair
    ``a|b``). ``joined``: a finishing task joins this task (which then leaves its times to it).
    """

    config: RunConfig
    stage: str
    shard: tuple[int, int] | None = None
    targets: tuple[str, ...] | None = None
    target_part: tuple[int, int] | None = None
    encoding_part: str | None = None
    joined: bool = False

    @property
    def extra(self) -> dict[str, Any]:
        """What the stage reads from ``StageContext.extra`` for this task (only what is set)."""
        values = {"targets": self.targets, "target_part": self.target_part, "encoding_part": self.encoding_part}
        return {key: value for key, value in values.items() if value is not None}

    @property
    def label(self) -> str:
        """``subject 1 features 2/4``, ``subject 2 fit z``, ``subject 1 fit c 3/4``: what the task is, in messages."""
        part = f" {self.shard[0]}/{self.shard[1]}" if self.shard else ""
        part += f" {','.join(self.targets)}" if self.targets else ""
        part += f" {self.target_part[0]}/{self.target_part[1]}" if self.target_part else ""
        part += f" {self.encoding_part}" if self.encoding_part else ""
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
        The shards (of ``fit``: the parts of the c targets) the finishing task merges (``None``: no merge).
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
        return needs_finish(self.tasks, self.n_shards)


def needs_finish(tasks: Sequence[StageTask], n_shards: int | None) -> bool:
    """Whether a finishing task joins ``tasks`` (merge, assembly, times): several tasks, or shards to merge."""
    return len(tasks) > 1 or n_shards is not None


def uses_gpu(config: RunConfig) -> bool:
    """Whether the run's ``device`` is a CUDA device."""
    return str(config.device).startswith("cuda")


def stage_resources(stage: Stage, config: RunConfig, cpus_per_task: float) -> tuple[float, float]:
    """``(num_cpus, num_gpus)`` of a task of ``stage``: one GPU for a stage that reads ``device = "cuda"``."""
    gpus = 1.0 if uses_gpu(config) and "device" in stage.run_keys else 0.0
    return float(cpus_per_task), gpus


def _fit_tasks(config: RunConfig, target_parts: int) -> tuple[tuple[StageTask, ...], int | None]:
    """One task per decoder, the :data:`PARTED_TARGETS` in ``target_parts`` parts (merged when more than one)."""
    tasks = []
    for target in FIT_TARGETS:
        if target in PARTED_TARGETS and target_parts > 1:
            tasks += [StageTask(config, "fit", targets=(target,), target_part=(i, target_parts))
                      for i in range(1, target_parts + 1)]
        else:
            tasks.append(StageTask(config, "fit", targets=(target,)))
    return tuple(tasks), (target_parts if target_parts > 1 else None)


def _tasks(stage: Stage, config: RunConfig, n_shards: int, target_parts: int
           ) -> tuple[tuple[StageTask, ...], int | None]:
    """The tasks of one stage and the number of shards (parts) to merge (``None``: none)."""
    if stage.shardable and stage.name in MERGED_STAGES and n_shards > 1:
        return tuple(StageTask(config, stage.name, shard=(i, n_shards)) for i in range(1, n_shards + 1)), n_shards
    if stage.name == "fit":
        return _fit_tasks(config, target_parts)
    return (StageTask(config, stage.name),), None


def _encode_tasks(stage: Stage, config: RunConfig) -> list[tuple[tuple[StageTask, ...], int | None]]:
    """The z_c / U-Net stores (when the config names them), then one task per feature space and pair."""
    from ..stages import StageContext
    from ..stages.encode import EncodeStage

    assert isinstance(stage, EncodeStage)
    names = stage.part_names(StageContext(config, progress=False))
    parts = tuple(StageTask(config, stage.name, encoding_part=name) for name in names)
    if config.zc is None:
        return [(parts, None)]
    return [((StageTask(config, stage.name, encoding_part="features_zc"),), None), (parts, None)]


def _stage_plans(stage: Stage, config: RunConfig, n_shards: int, target_parts: int,
                 cpus_per_task: float) -> list[StagePlan]:
    """The plans of one stage: one, or for ``encode`` the z_c stores then the parts (each plan after the last)."""
    cpus, gpus = stage_resources(stage, config, cpus_per_task)
    if stage.name == "encode":
        steps = _encode_tasks(stage, config)
    else:
        steps = [_tasks(stage, config, n_shards, target_parts)]
    plans = []
    for tasks, shards in steps:
        if needs_finish(tasks, shards):
            tasks = tuple(dataclasses.replace(task, joined=True) for task in tasks)
        plans.append(StagePlan(config, stage.name, tasks, shards, cpus, gpus))
    return plans


def plan_subject(config: RunConfig, stages: Sequence[Stage], n_shards: int,
                 cpus_per_task: float = 1, target_parts: int | None = None) -> list[StagePlan]:
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
    target_parts : int, optional
        Parts of the c decoder's targets, one ``fit`` task each (default ``n_shards``; 1: one task).
    """
    parts = n_shards if target_parts is None else target_parts
    return [plan for stage in stages if stage.enabled(config)
            for plan in _stage_plans(stage, config, n_shards, parts, cpus_per_task)]
