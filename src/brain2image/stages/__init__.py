"""The stages of the method, one :class:`Stage` class each, and their registry (docs/stages.md).

``brain2image run`` (:func:`brain2image.pipeline.run_pipeline`) runs the registered stages in
order in a run folder; ``brain2image <stage>`` is each stage's command, its parser generated from
the stage's options; a cluster runner asks each stage for its tasks (:meth:`Stage.tasks`:
:class:`TaskSpec` steps), runs each with :func:`run_stage` and joins them with
:func:`finish_stage`. Importing this package registers the built-in stages, in pipeline order:
prepare, features, fit (or transfer), reconstruct, evaluate, encode, brain_correlation, report.
"""

from __future__ import annotations

from .base import CommandOutput, Stage, StageContext, Timings, check_run_model, finish_stage, run_stage
from .options import RUN, Option, flag_of, section_options
from .registry import (
    BUILTIN_MODULES,
    check_stage_settings,
    get_stage,
    load_builtin_stages,
    pipeline_stages,
    register_stage,
    stage_names,
    unregister_stage,
)
from .tasks import Split, TaskSpec

load_builtin_stages()

__all__ = ["Stage", "StageContext", "Timings", "CommandOutput", "Option", "RUN", "flag_of", "section_options",
           "register_stage", "unregister_stage", "pipeline_stages", "get_stage", "stage_names", "run_stage",
           "finish_stage", "Split", "TaskSpec", "check_run_model", "check_stage_settings", "BUILTIN_MODULES"]
