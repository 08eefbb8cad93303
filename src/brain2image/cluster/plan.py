"""What one subject's run becomes on a cluster: per stage, its steps of tasks and the resources each asks for.

Each stage says how it splits (:meth:`Stage.tasks <brain2image.stages.Stage.tasks>`: steps of
:class:`~brain2image.stages.TaskSpec`, for the run's :class:`~brain2image.stages.Split`); a step's
tasks run at once, each step after the one before. A stage split into more than one task is then
finished by one more task (:meth:`Stage.finish <brain2image.stages.Stage.finish>`), which also
records the tasks' times. The plan knows no stage by name, and imports no Ray:
:mod:`brain2image.cluster.ray_runner` submits it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..config import RunConfig
from ..errors import InvalidArgumentError

if TYPE_CHECKING:
    from ..stages.base import Stage
    from ..stages.tasks import Split, TaskSpec

__all__ = ["StageTask", "StagePlan", "uses_gpu", "stage_resources", "plan_stage", "plan_subject"]


@dataclass(frozen=True)
class StageTask:
    """One task: one piece (``spec``) of ``stage`` in the run folder of ``config`` (one subject).

    ``joined``: a finishing task joins this task (which then leaves its times to it).
    """

    config: RunConfig
    stage: Stage
    spec: TaskSpec
    joined: bool = False

    @property
    def label(self) -> str:
        """``subject 1 <stage> 2/4``: what the task is, in messages (the stage's name, then the piece)."""
        piece = self.spec.label
        return f"subject {self.config.subject} {self.stage.name}" + (f" {piece}" if piece else "")


@dataclass(frozen=True)
class StagePlan:
    """One stage of one subject: its steps of tasks and the resources of each task.

    Attributes
    ----------
    config : RunConfig
        The subject's one-subject config.
    stage : Stage
    steps : tuple of tuple of StageTask
        The tasks of each step (a step's tasks run at once; each step after the one before).
    num_cpus, num_gpus : float
        What each task of the stage asks Ray for.
    """

    config: RunConfig
    stage: Stage
    steps: tuple[tuple[StageTask, ...], ...]
    num_cpus: float
    num_gpus: float

    @property
    def tasks(self) -> tuple[StageTask, ...]:
        """Every task of the stage, step after step."""
        return tuple(task for step in self.steps for task in step)

    @property
    def specs(self) -> tuple[TaskSpec, ...]:
        """What :meth:`Stage.finish` is given: the pieces of every task."""
        return tuple(task.spec for task in self.tasks)

    @property
    def needs_finish(self) -> bool:
        """Whether a finishing task joins the tasks (the stage split into more than one)."""
        return len(self.tasks) > 1

    @property
    def finish_label(self) -> str:
        """``subject 1 <stage> (finish)``."""
        return f"subject {self.config.subject} {self.stage.name} (finish)"


def uses_gpu(config: RunConfig) -> bool:
    """Whether the run's ``device`` is a CUDA device."""
    return str(config.device).startswith("cuda")


def stage_resources(stage: Stage, config: RunConfig, cpus_per_task: float) -> tuple[float, float]:
    """``(num_cpus, num_gpus)`` of a task of ``stage``: one GPU for a stage that reads ``device = "cuda"``."""
    gpus = 1.0 if uses_gpu(config) and "device" in stage.run_keys else 0.0
    return float(cpus_per_task), gpus


def _checked_steps(stage: Stage, steps: Any) -> list[list[TaskSpec]]:
    """``stage.tasks(...)`` checked: a non-empty list of non-empty lists of TaskSpec.

    Raises
    ------
    InvalidArgumentError
        Naming the stage and what its ``tasks`` returned.
    """
    from ..stages.tasks import TaskSpec

    valid = isinstance(steps, (list, tuple)) and len(steps) > 0 and all(
        isinstance(step, (list, tuple)) and len(step) > 0 and all(isinstance(t, TaskSpec) for t in step)
        for step in steps)
    if not valid:
        raise InvalidArgumentError(f"stage {stage.name!r}: tasks() returned {steps!r}; expected a list of steps, "
                                   "each a non-empty list of TaskSpec")
    return [list(step) for step in steps]


def plan_stage(stage: Stage, config: RunConfig, split: Split, cpus_per_task: float = 1) -> StagePlan:
    """The plan of one stage of one subject: its tasks (:meth:`Stage.tasks`) and their resources.

    Raises
    ------
    InvalidArgumentError
        When the stage's ``tasks`` returns no task or something other than TaskSpec steps, or
        splits into several tasks without overriding :meth:`Stage.finish`.
    """
    from ..stages import Stage as BaseStage
    from ..stages import StageContext

    steps = _checked_steps(stage, stage.tasks(StageContext(config, progress=False), split))
    joined = sum(len(step) for step in steps) > 1
    if joined and type(stage).finish is BaseStage.finish:
        raise InvalidArgumentError(f"stage {stage.name!r} splits into {sum(len(step) for step in steps)} tasks but "
                                   "does not join them; expected an override of Stage.finish (docs/extending.md)")
    cpus, gpus = stage_resources(stage, config, cpus_per_task)
    planned = tuple(tuple(StageTask(config, stage, spec, joined) for spec in step) for step in steps)
    return StagePlan(config, stage, planned, cpus, gpus)


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
        Shards of the image ids a stage may split into (``Split.shards``; 1: none).
    cpus_per_task : float
        CPUs each task asks for.
    target_parts : int, optional
        Parts of a decoder's targets a stage may split its fits into (``Split.target_parts``; default
        ``n_shards``).
    """
    from ..stages.tasks import Split

    split = Split(int(n_shards), int(n_shards if target_parts is None else target_parts))
    return [plan_stage(stage, config, split, cpus_per_task) for stage in stages if stage.enabled(config)]
