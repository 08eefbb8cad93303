"""Decoder targets: what a decoder predicts from brain activity, and the registry of targets.

A target (:class:`Target`) is a feature of each image that a ridge decoder maps voxels onto: the
VAE latent ``z`` and the text-conditioning embedding ``c`` of Takagi & Nishimoto are the two
built-ins (:data:`BUILTIN_TARGETS`, implemented in :mod:`brain2image.ldm.targets`). A target says
how to compute its features from the model and the stimuli (:meth:`Target.batches`), the shape of
one image's features (read from the model), the ROI it is decoded from by default, and whether the
reconstruction methods draw from it (:attr:`Target.conditions_generation`).

Targets register through the ``brain2image.targets`` entry-point group (``[project.entry-points]``
in ``pyproject.toml``) or in code with :func:`register_target`. A run decodes the targets of its
``[decoder] targets`` table (target -> ROI, default: the built-ins with their default ROIs);
features, fit, retrieval, the report and the cluster plan loop over them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import InvalidArgumentError
from .registry import NamedRegistry

if TYPE_CHECKING:
    import numpy as np
    import torch

    from .config import FeatureConfig
    from .ldm.loading import LatentDiffusionModel
    from .sources import StimulusSource

__all__ = ["Target", "BUILTIN_TARGETS", "BUILTIN_TARGET_ROIS", "ENTRY_POINT_GROUP", "register_target",
           "unregister_target", "registered_targets", "target_names", "get_target", "default_target_rois",
           "TARGET_CHOICES"]

#: The built-in targets and the ROI each is decoded from by default, in their fixed registry order
#: (the paper's: z from early visual cortex, c from higher, ventral visual cortex).
BUILTIN_TARGET_ROIS: dict[str, str] = {"z": "early", "c": "ventral"}
#: Names of the built-in targets, in order.
BUILTIN_TARGETS: tuple[str, ...] = tuple(BUILTIN_TARGET_ROIS)
#: Entry-point group of decoder targets.
ENTRY_POINT_GROUP = "brain2image.targets"


class Target(ABC):
    """A feature of each image that a decoder predicts.

    Subclasses set the class attributes and implement :meth:`shape` and :meth:`batches`.

    Attributes
    ----------
    name : str
        Its name in configs, file names (``features/<dataset>_<model>_<name>.h5``,
        ``decoders/subjXX_<name>_<roi>.h5``) and reports.
    default_roi : str
        The ROI of the prepared file it is decoded from when ``[decoder] targets`` does not say.
    conditions_generation : bool
        Whether reconstruction methods draw from it (a target decoded only to be scored does not).
    description : str
        One line for reports and help (``"VAE latent"``).
    fit_in_parts : bool
        Whether a cluster run fits its decoder as several tasks, each on a part of its columns
        (``run --ray --target-parts N``): for targets with many columns (c: 77 x 768 at SD v1.4's size).
    """

    name: str = ""
    default_roi: str = ""
    conditions_generation: bool = True
    description: str = ""
    fit_in_parts: bool = False

    def resolution(self, model: LatentDiffusionModel, config: FeatureConfig) -> int:
        """The image side its features are computed at (recorded in the store; 0: none)."""
        return 0

    @abstractmethod
    def shape(self, model: LatentDiffusionModel, config: FeatureConfig) -> tuple[int, ...]:
        """The shape of one image's features, read from the model (and ``config``)."""

    def check_inputs(self, stimuli: StimulusSource, ids: np.ndarray) -> Any:
        """Check what :meth:`batches` will read of ``ids``, before its store is created.

        Returns what :meth:`batches` may reuse (``state``), e.g. the captions it loaded.

        Raises
        ------
        Brain2ImageError
            A one-line error naming the file and what was expected.
        """
        stimuli.check(ids)
        return None

    @abstractmethod
    def batches(self, model: LatentDiffusionModel, stimuli: StimulusSource, ids: np.ndarray,
                config: FeatureConfig, state: Any = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(batch_ids, features)`` of ``ids`` (sorted, unique), ``config.batch_size`` images at a time.

        Parameters
        ----------
        model : LatentDiffusionModel
        stimuli : StimulusSource
        ids : array of shape (n_images,)
        config : FeatureConfig
        state : any
            What :meth:`check_inputs` returned, or None (then the target reads what it needs).

        Yields
        ------
        batch_ids : array of shape (n_batch,)
        features : array of shape (n_batch, *shape)
        """

    def as_model_input(self, model: LatentDiffusionModel, values: Any, n: int, what: str) -> torch.Tensor:
        """``values`` (decoded or true features of ``n`` images) shaped as the model takes them.

        Raises
        ------
        DataFormatError
            When ``values`` has not ``n`` rows of this target's shape (``what`` names them).
        """
        raise InvalidArgumentError(f"target {self.name!r} is not an input of the model; expected a target "
                                   "with conditions_generation")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


T = TypeVar("T", bound="Target | type[Target]")

_REGISTRY: NamedRegistry[Target] = NamedRegistry(Target, ENTRY_POINT_GROUP, "decoder target", BUILTIN_TARGETS,
                                                 required=("default_roi",))


def register_target(target: T, *, replace: bool = False) -> T:
    """Register a decoder target (a subclass or an instance; usable as a class decorator).

    Parameters
    ----------
    target : Target subclass or instance
    replace : bool
        Replace a target registered under the same name.

    Returns
    -------
    ``target``, unchanged.

    Raises
    ------
    InvalidArgumentError
        For an object that is not a target, a target without a name or default ROI, or a name already taken.
    """
    _REGISTRY.register(target, replace=replace)
    return target


def unregister_target(name: str) -> None:
    """Remove a registered target (tests; a plug-in replacing one)."""
    _REGISTRY.unregister(name)


def registered_targets() -> tuple[Target, ...]:
    """Every registered target: the built-ins in :data:`BUILTIN_TARGETS` order, then the others as registered."""
    return _REGISTRY.items()


def target_names() -> tuple[str, ...]:
    """Names of every registered target, in registry order."""
    return _REGISTRY.names()


def get_target(name: str) -> Target:
    """The registered target ``name``.

    Raises
    ------
    InvalidArgumentError
        For an unknown name (the message lists the registered ones).
    """
    return _REGISTRY.get(name)


def default_target_rois() -> dict[str, str]:
    """``[decoder] targets``' default: each built-in target and its default ROI (``{"z": "early", "c": "ventral"}``).

    Needs no entry point, so a config can be built before any plug-in is imported.
    """
    return dict(BUILTIN_TARGET_ROIS)


#: Names of the registered targets, read from the registry on every use (``[decoder] targets``' keys).
TARGET_CHOICES: Sequence[str] = _REGISTRY.choices
