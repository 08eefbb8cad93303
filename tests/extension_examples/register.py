"""The plug-in module of the worked examples: importing it registers all four (``plugins = [...]`` of a run config).

``brain2image run`` imports it before the config's sections are checked, and every Ray worker
imports it before its task runs, so the toy source, the ``thumb`` target, the ``z_plus_c_half``
method and the ``squares`` stage are known in each process. :func:`unregister` removes them again
(the tests).
"""

from __future__ import annotations

from method_plugins import HalfStrength
from splittable_stage import SquaresStage

from brain2image.methods import register_method, unregister_method
from brain2image.sources import register_source, unregister_source
from brain2image.stages import register_stage, unregister_stage
from brain2image.targets import register_target, unregister_target

from .thumbnail import ThumbnailTarget
from .toy_source import ToySource

register_source("toy", ToySource)
register_target(ThumbnailTarget)
register_method(HalfStrength)
register_stage(SquaresStage)


def unregister() -> None:
    """Remove the four registrations (a later import of this module, in a fresh ``sys.modules``, adds them again)."""
    unregister_source("toy")
    unregister_target(ThumbnailTarget.name)
    unregister_method(HalfStrength.name)
    unregister_stage(SquaresStage.name)
