"""Runs spread over a cluster: ``brain2image run CONFIG --ray [ADDRESS]`` (docs/cluster.md).

:func:`~brain2image.cluster.ray_runner.run_on_ray` runs a run config's stages as Ray tasks: each
stage splits itself (:meth:`Stage.tasks <brain2image.stages.Stage.tasks>`), :mod:`brain2image.cluster.plan`
turns that into tasks and their resources, :mod:`brain2image.cluster.tasks` is what a worker runs.
This package is a generic executor: it names no stage. Importing it does not import Ray; only
starting or joining a session does.
"""

from __future__ import annotations

from .plan import StagePlan, StageTask, plan_stage, plan_subject
from .ray_runner import ClusterTaskError, ClusterUnreachableError, run_on_ray
from .tasks import TransientTaskError, is_transient

__all__ = ["run_on_ray", "ClusterUnreachableError", "ClusterTaskError", "TransientTaskError", "is_transient",
           "StageTask", "StagePlan", "plan_stage", "plan_subject"]
