"""Reconstruction methods: the protocol a method implements and the registry of methods.

A method (:class:`ReconstructionMethod`) says which targets it draws from (``needs``), whether it
reads their decoded or their true features (``true_features``), whether it runs the diffusion
model (``uses_diffusion``), how it builds its diffusers pipeline from the loaded model
(:meth:`~ReconstructionMethod.pipeline`) and how it draws one batch of images
(:meth:`~ReconstructionMethod.generate`). :func:`brain2image.ldm.reconstruct.reconstruct` loops
over the methods it is given and asks each one for its images; it knows no method by name.

Methods register through the ``brain2image.methods`` entry-point group (``[project.entry-points]``
in ``pyproject.toml``: the entry point names a :class:`ReconstructionMethod` subclass or instance),
or in code with :func:`register_method`. The four built-ins (:data:`BUILTIN_METHODS`, implemented
in :mod:`brain2image.ldm.methods`) come first, in that fixed order (the order of the report's
tables); the others follow in registration order. Run configs default to the built-ins: a plug-in
method runs when ``[reconstruction] methods`` names it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from .registry import NamedRegistry

if TYPE_CHECKING:
    import numpy as np
    import torch

    from .config import ReconstructionConfig
    from .ldm.loading import LatentDiffusionModel

__all__ = ["ReconstructionMethod", "MethodBatch", "BUILTIN_METHODS", "ENTRY_POINT_GROUP", "METHOD_CHOICES",
           "register_method", "unregister_method", "registered_methods", "method_names", "get_method",
           "builtin_methods", "method_label", "parse_methods", "needed_inputs"]

#: Names of the built-in methods, in their fixed registry order (the report's order).
BUILTIN_METHODS: tuple[str, ...] = ("z_only", "c_only", "z_plus_c", "oracle")
#: Entry-point group of reconstruction methods.
ENTRY_POINT_GROUP = "brain2image.methods"


@dataclass(frozen=True)
class MethodBatch:
    """One call's worth of images to draw with a method.

    Attributes
    ----------
    model : LatentDiffusionModel
        The loaded model.
    pipeline : Any
        What the method's :meth:`ReconstructionMethod.pipeline` built (None when it builds none).
    config : ReconstructionConfig
        Steps, guidance, eta, strength, seed, batch size.
    features : mapping of str to tensor
        Per needed target, its features for every image the method draws (first axis: image),
        decoded or true as the method says, shaped as the model takes them (z: (n_images,
        latent_channels, h, w); c: (n_images, text_seq_len, text_width)).
    rows : tensor of shape (n_draws,), int64
        The image (row of ``features``) of each image to draw, in order.
    unconditional : tensor of shape (1, text_seq_len, text_width) or None
        The empty prompt's embedding (classifier-free guidance's unconditional input), for a
        method that uses diffusion.
    """

    model: LatentDiffusionModel
    pipeline: Any
    config: ReconstructionConfig
    features: Mapping[str, torch.Tensor]
    rows: torch.Tensor
    unconditional: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def feature(self, target: str) -> torch.Tensor:
        """The features of ``target`` of each image to draw (one per row of :attr:`rows`)."""
        return self.features[target][self.rows]


class ReconstructionMethod(ABC):
    """A way to draw an image of each test image from decoded (or true) features.

    Subclasses set the class attributes and implement :meth:`generate`; an instance may override
    an attribute (a method under another name).

    Attributes
    ----------
    name : str
        Its name in configs, on the command line and in files (``recon/<name>/``).
    label : str
        Its name in reports (default: ``name``).
    needs : tuple of str
        The targets it draws from (e.g. ``("z", "c")``), in the order their features are read.
    true_features : bool
        Draw from the true features of ``needs`` instead of the decoded ones (an upper bound, as
        the oracle); the reports keep it out of the "best method" choice.
    uses_diffusion : bool
        Whether it runs the diffusion model. A method that does not draws no noise: it is given
        batches of images (not of samples), no generators, and its image of a test image is
        every sample's (the report shows one).
    """

    name: str = ""
    label: str = ""
    needs: tuple[str, ...] = ()
    true_features: bool = False
    uses_diffusion: bool = True

    @property
    def inputs(self) -> tuple[str, ...]:
        """The feature arrays it reads: its targets' names (decoded), or ``<target>_true``."""
        return tuple(f"{t}_true" for t in self.needs) if self.true_features else tuple(self.needs)

    def pipeline(self, model: LatentDiffusionModel) -> Any:
        """The diffusers pipeline it draws with, built once per run of the method (default: none).

        Parameters
        ----------
        model : LatentDiffusionModel
        """
        return None

    @abstractmethod
    def generate(self, batch: MethodBatch, generators: list[torch.Generator] | None) -> np.ndarray:
        """Draw one batch.

        Parameters
        ----------
        batch : MethodBatch
        generators : list of torch.Generator, or None
            One per image to draw, each seeded from (seed, 73k id, sample); None for a method
            that does not use diffusion.

        Returns
        -------
        array of shape (n_draws, H, W, 3), uint8
            One image per row of ``batch.rows``, in order.
        """

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


M = TypeVar("M", bound="ReconstructionMethod | type[ReconstructionMethod]")

_REGISTRY: NamedRegistry[ReconstructionMethod] = NamedRegistry(ReconstructionMethod, ENTRY_POINT_GROUP,
                                                               "reconstruction method", BUILTIN_METHODS)


def register_method(method: M, *, replace: bool = False) -> M:
    """Register a reconstruction method (a subclass or an instance; usable as a class decorator).

    Parameters
    ----------
    method : ReconstructionMethod subclass or instance
    replace : bool
        Replace a method registered under the same name (it keeps its place).

    Returns
    -------
    ``method``, unchanged.

    Raises
    ------
    InvalidArgumentError
        For an object that is not a method, a method without a name, or a name already taken.
    """
    _REGISTRY.register(method, replace=replace)
    return method


def unregister_method(name: str) -> None:
    """Remove a registered method (tests; a plug-in replacing one)."""
    _REGISTRY.unregister(name)


def registered_methods() -> tuple[ReconstructionMethod, ...]:
    """Every registered method: the built-ins in :data:`BUILTIN_METHODS` order, then the others as registered."""
    return _REGISTRY.items()


def method_names() -> tuple[str, ...]:
    """Names of every registered method, in registry order."""
    return _REGISTRY.names()


def builtin_methods(decoded_only: bool = False) -> tuple[str, ...]:
    """Names of the registered built-ins (the run configs' default), in order.

    Parameters
    ----------
    decoded_only : bool
        Only those that draw from decoded features (every built-in but the oracle).
    """
    return tuple(m.name for m in registered_methods()
                 if m.name in BUILTIN_METHODS and not (decoded_only and m.true_features))


def get_method(name: str) -> ReconstructionMethod:
    """The registered method ``name``.

    Raises
    ------
    InvalidArgumentError
        For an unknown name (the message lists the registered ones).
    """
    return _REGISTRY.get(name)


def method_label(name: str) -> str:
    """The report's name of a method: its ``label`` when registered with one, else ``name`` itself."""
    method = _REGISTRY.find(name)
    return (method.label or method.name) if method is not None else name


def parse_methods(names: Iterable[str | ReconstructionMethod]) -> tuple[ReconstructionMethod, ...]:
    """Registered methods from their names (or methods, kept as they are), in the given order.

    Raises
    ------
    InvalidArgumentError
        For an unknown name (the message lists the registered ones).
    """
    return tuple(n if isinstance(n, ReconstructionMethod) else get_method(str(n)) for n in names)


def needed_inputs(methods: Iterable[str | ReconstructionMethod]) -> tuple[str, ...]:
    """The feature arrays ``methods`` read, each once: decoded ones, then true ones, in registry order.

    For the built-ins: some of ``z, c, z_true, c_true`` in that order.
    """
    wanted = {m.name: m for m in parse_methods(methods)}
    ranked = [m for m in registered_methods() if m.name in wanted]
    ranked += [m for name, m in wanted.items() if name not in method_names()]
    ordered = [m for m in ranked if not m.true_features] + [m for m in ranked if m.true_features]
    return tuple(dict.fromkeys(name for m in ordered for name in m.inputs))


#: Names of the registered methods, read from the registry on every use (``[reconstruction] methods``'
#: choices: plug-in methods included).
METHOD_CHOICES: Sequence[str] = _REGISTRY.choices
