"""Runs spread over a cluster: ``brain2image run CONFIG --ray [ADDRESS]`` (docs/cluster.md).

:func:`~brain2image.cluster.ray_runner.run_on_ray` runs a run config's stages as Ray tasks
(:mod:`brain2image.cluster.plan` says which, :mod:`brain2image.cluster.tasks` is what a worker
runs). Importing this package does not import Ray; only starting or joining a session does.
"""

from __future__ import annotations

from .plan import StagePlan, StageTask, plan_subject
from .ray_runner import ClusterTaskError, ClusterUnreachableError, run_on_ray
from .tasks import TransientTaskError

__all__ = ["run_on_ray", "ClusterUnreachableError", "ClusterTaskError", "TransientTaskError", "StageTask",
           "StagePlan", "plan_subject"]
