"""The registry of evaluation feature spaces: what images are compared in, besides pixels.

A feature space is a :class:`FeatureSpace`: a name, the name its metrics are reported under, a
kind, and a loader that builds its :class:`FeatureExtractor` (``features(images) -> (n, d)``) on
a device. Kinds and the metric-table keys they produce (``<r>`` = the reported name):

================ =================================================================
kind             keys
================ =================================================================
identification   ``id_<r>`` (two-way identification of sample 0) and ``takagi_<r>``
                 (Takagi & Nishimoto's identification over all samples)
distance         ``dist_<r>`` (mean correlation distance of sample 0)
takagi           ``takagi_<r>`` only
================ =================================================================

Registered here (the core):

- ``pixel``: the RGB pixels at the comparison size (:func:`~.metrics.comparison_size`);
- ``alexnet2``, ``alexnet5``, ``inception``, ``clip`` (identification), ``effnet``, ``swav``
  (distance): nodes of the networks of :mod:`.feature_networks` (:data:`NETWORK_SPACES`);
- ``alexnet_features5``, ``alexnet_features12``, ``alexnet_classifier5`` (takagi): Takagi &
  Nishimoto's own AlexNet layers, evaluated as companions of ``alexnet2`` / ``alexnet5``.

Other spaces come from the entry-point group ``brain2image.feature_spaces``
(:mod:`brain2image.plugins`): its object is a callable taking ``device=`` and returning a
:class:`FeatureSpace` of the entry point's name (the embedded world registers ``scene`` there,
reported as ``semantic``). :func:`register_feature_space` adds a space at run time.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal, Protocol, get_args

import numpy as np

from .. import plugins
from ..errors import InvalidArgumentError
from .feature_networks import FeatureNetwork, load_feature_network
from .metrics import DEFAULT_SIZE, resize_for_metrics

__all__ = [
    "Kind",
    "KINDS",
    "FeatureExtractor",
    "LoadOptions",
    "FeatureSpace",
    "NETWORK_SPACES",
    "TAKAGI_COMPANIONS",
    "register_feature_space",
    "unregister_feature_space",
    "feature_space_names",
    "get_feature_space",
    "resolve_feature_spaces",
    "load_extractors",
    "network_extractors",
]

Kind = Literal["identification", "distance", "takagi"]
#: The kinds of feature spaces (see the module docstring).
KINDS: tuple[str, ...] = get_args(Kind)

#: Network spaces: name → (network of :data:`~.feature_networks.NETWORKS`, node, kind).
NETWORK_SPACES: Mapping[str, tuple[str, str, Kind]] = {
    "alexnet2": ("alexnet", "features.4", "identification"),
    "alexnet5": ("alexnet", "features.11", "identification"),
    "inception": ("inception", "avgpool", "identification"),
    "clip": ("clip", "image_embeds", "identification"),
    "effnet": ("effnet", "avgpool", "distance"),
    "swav": ("swav", "avgpool", "distance"),
    "alexnet_features5": ("alexnet", "features.5", "takagi"),
    "alexnet_features12": ("alexnet", "features.12", "takagi"),
    "alexnet_classifier5": ("alexnet", "classifier.5", "takagi"),
}

#: Takagi & Nishimoto's AlexNet layers, evaluated whenever an AlexNet space is.
TAKAGI_COMPANIONS: tuple[str, ...] = ("alexnet_features5", "alexnet_features12", "alexnet_classifier5")


class FeatureExtractor(Protocol):
    """What a loaded feature space does: images → one feature vector per image."""

    def features(self, images: np.ndarray) -> np.ndarray:
        """Features of uint8 images of shape (n_images, height, width, 3) → array (n_images, n_features)."""
        ...


@dataclass(frozen=True)
class LoadOptions:
    """What a loader may use: device, checkpoints, batch size, comparison size, shared objects.

    Attributes
    ----------
    device : str
        Where the extractor runs (``"cpu"``, ``"cuda"``, ...).
    weights_dir : Path, optional
        Folder of checkpoints (the network spaces; default: the local caches).
    batch_size : int
        Images per forward pass of a network.
    image_size : int
        Side (pixels) at which image-level spaces such as ``pixel`` compare images; callers
        pass :func:`~.metrics.comparison_size` of the real images.
    cache : dict
        Objects shared by the spaces loaded with these options (one AlexNet serves
        ``alexnet2``, ``alexnet5`` and Takagi's layers); see :meth:`shared`.
    """

    device: str = "cpu"
    weights_dir: Path | None = None
    batch_size: int = 32
    image_size: int = DEFAULT_SIZE
    cache: dict[Any, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)

    def shared(self, key: Any, make: Callable[[], Any]) -> Any:
        """The object cached under ``key``, made with ``make()`` on first use."""
        if key not in self.cache:
            self.cache[key] = make()
        return self.cache[key]


@dataclass(frozen=True)
class FeatureSpace:
    """One feature space of the metric table.

    Attributes
    ----------
    name : str
        The name requested in metric sets (``pixel``, ``alexnet2``, ``scene``, ...).
    kind : {"identification", "distance", "takagi"}
        Which metrics it gives (see the module docstring).
    loader : callable
        ``loader(options: LoadOptions) -> FeatureExtractor``.
    reported : str, optional
        The name in the metric keys (default: ``name``); ``scene`` is reported as ``semantic``.
    companions : tuple of str
        Registered spaces evaluated with this one whenever it is requested.
    description : str
        One line for listings and error messages.
    """

    name: str
    kind: Kind
    loader: Callable[[LoadOptions], FeatureExtractor]
    reported: str | None = None
    companions: tuple[str, ...] = ()
    description: str = ""

    def __post_init__(self) -> None:
        if not self.name or not self.name.isidentifier():
            raise InvalidArgumentError(f"feature space name: expected an identifier, got {self.name!r}")
        if self.kind not in KINDS:
            raise InvalidArgumentError(
                f"feature space {self.name!r}: kind must be one of {list(KINDS)}, got {self.kind!r}")

    @property
    def reported_name(self) -> str:
        """The name used in the metric keys."""
        return self.reported or self.name

    @property
    def metric_keys(self) -> tuple[str, ...]:
        """The metric-table keys this space produces, in order."""
        prefixes = {"identification": ("id", "takagi"), "distance": ("dist",), "takagi": ("takagi",)}[self.kind]
        return tuple(f"{p}_{self.reported_name}" for p in prefixes)

    def load(self, options: LoadOptions | None = None) -> FeatureExtractor:
        """Build the extractor (reads weights, moves them to ``options.device``)."""
        return self.loader(options or LoadOptions())


#: The registry: name → FeatureSpace (the core spaces are added at import, see the bottom).
_REGISTRY: dict[str, FeatureSpace] = {}


def register_feature_space(space: FeatureSpace, *, replace: bool = False) -> FeatureSpace:
    """Add ``space`` to the registry (returned, so that it can decorate a definition).

    Raises
    ------
    InvalidArgumentError
        When a space of that name is registered already and ``replace`` is false.
    """
    if not isinstance(space, FeatureSpace):
        raise InvalidArgumentError(f"register_feature_space: expected a FeatureSpace, got {type(space).__name__}")
    if space.name in _REGISTRY and not replace:
        raise InvalidArgumentError(
            f"feature space {space.name!r} is registered already; pass replace=True to override it")
    _REGISTRY[space.name] = space
    return space


def unregister_feature_space(name: str) -> None:
    """Remove a space added with :func:`register_feature_space` (no error when absent)."""
    _REGISTRY.pop(name, None)


def feature_space_names() -> list[str]:
    """Sorted names of every known space: the registry's and the entry points'."""
    return sorted(set(_REGISTRY) | set(plugins.plugin_names(plugins.FEATURE_SPACES)))


def _unknown(names: Sequence[str]) -> InvalidArgumentError:
    return InvalidArgumentError(
        f"unknown feature space{'s' if len(names) > 1 else ''} {', '.join(map(repr, names))}; "
        f"known: {', '.join(feature_space_names())} (add one with "
        f"brain2image.evaluation.feature_spaces.register_feature_space or the "
        f"{plugins.FEATURE_SPACES!r} entry-point group)")


def get_feature_space(name: str, device: str = "cpu") -> FeatureSpace:
    """The space called ``name``: from the registry, else from its entry point.

    Parameters
    ----------
    name : str
    device : str
        Passed to an entry point's factory (``factory(device=device)``).

    Raises
    ------
    InvalidArgumentError
        When no space has that name (the message lists the known ones), or when an entry
        point returns something other than a FeatureSpace of its own name.
    """
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name not in plugins.plugin_names(plugins.FEATURE_SPACES):
        raise _unknown([name])
    factory = plugins.load_plugin(plugins.FEATURE_SPACES, name)
    space = factory if isinstance(factory, FeatureSpace) else factory(device=device)
    if not isinstance(space, FeatureSpace) or space.name != name:
        raise InvalidArgumentError(
            f"entry point {name!r} of {plugins.FEATURE_SPACES!r}: expected a FeatureSpace named {name!r}, "
            f"got {getattr(space, 'name', type(space).__name__)!r}")
    return space


def resolve_feature_spaces(names: Iterable[str], device: str = "cpu") -> list[FeatureSpace]:
    """The requested spaces plus their companions, in evaluation order.

    Each requested space keeps its place; a companion not requested itself follows the last
    requested space that names it (``alexnet2, alexnet5`` → ``alexnet2, alexnet5,
    alexnet_features5, alexnet_features12, alexnet_classifier5``).

    Raises
    ------
    InvalidArgumentError
        Naming every unknown space and the known ones.
    """
    requested = list(dict.fromkeys(names))
    known = set(feature_space_names())
    unknown = [n for n in requested if n not in known]
    if unknown:
        raise _unknown(unknown)
    spaces = [get_feature_space(n, device) for n in requested]
    last_requester: dict[str, int] = {}
    for i, space in enumerate(spaces):
        for companion in space.companions:
            if companion not in requested:
                last_requester[companion] = i
    ordered: list[FeatureSpace] = []
    for i, space in enumerate(spaces):
        ordered.append(space)
        ordered += [get_feature_space(c, device) for c, at in last_requester.items() if at == i]
    return ordered


def load_extractors(spaces: Iterable[FeatureSpace], options: LoadOptions) -> dict[str, FeatureExtractor]:
    """Load every space's extractor with one set of options (sharing what they share)."""
    return {space.name: space.load(options) for space in spaces}


@dataclass(frozen=True)
class _PixelFeatures:
    """RGB pixels resized to ``side × side`` (bilinear, antialiased), flattened, in [0, 1]."""

    side: int

    def features(self, images: np.ndarray) -> np.ndarray:
        return resize_for_metrics(images, self.side).reshape(len(images), -1)


class _SharedNetwork:
    """A network read by several spaces (one node each) in one forward pass per image array.

    The first node asked of an image array triggers one pass computing every node; the nodes of
    the other spaces built on this network are kept until each is asked once for the same array
    object (so nothing is held once every space has read it). The array must not be changed in
    place between those calls.
    """

    def __init__(self, network: FeatureNetwork, batch_size: int):
        self.network = network
        self.batch_size = batch_size
        self._nodes: set[str] = set()
        self._images: weakref.ref[np.ndarray] | None = None
        self._pending: dict[str, np.ndarray] = {}

    def node(self, node: str) -> _NetworkNode:
        """An extractor of ``node`` sharing this network's passes."""
        self._nodes.add(node)
        return _NetworkNode(self, node)

    def features(self, images: np.ndarray, node: str) -> np.ndarray:
        """Activations at ``node``, array of shape (n_images, n_features), float32."""
        same = self._images is not None and self._images() is images
        if same and node in self._pending:
            return self._pending.pop(node)
        out = self.network.extract(images, self.batch_size)
        self._images = weakref.ref(images)
        self._pending = {n: out[n] for n in self._nodes if n != node}
        return out[node]


@dataclass(frozen=True)
class _NetworkNode:
    """One node of a shared network, flattened."""

    shared: _SharedNetwork
    node: str

    def features(self, images: np.ndarray) -> np.ndarray:
        return self.shared.features(images, self.node)


def _load_pixel(options: LoadOptions) -> FeatureExtractor:
    return _PixelFeatures(options.image_size)


def _load_network_node(network: str, node: str, options: LoadOptions) -> FeatureExtractor:
    shared = options.shared(("network", network), lambda: _SharedNetwork(load_feature_network(
        network, weights_dir=options.weights_dir, device=options.device), options.batch_size))
    return shared.node(node)


def network_extractors(network: FeatureNetwork, batch_size: int = 32) -> dict[str, FeatureExtractor]:
    """Extractors of every network space read from an already built network.

    For injecting preloaded networks (e.g. randomly initialised ones in tests) into
    :func:`~.evaluate.evaluate_reconstructions` (``extractors=``).

    Returns
    -------
    extractors : dict space name → FeatureExtractor
        The spaces of :data:`NETWORK_SPACES` whose network is ``network.spec.name``.
    """
    shared = _SharedNetwork(network, batch_size)
    return {name: shared.node(node) for name, (net, node, _) in NETWORK_SPACES.items() if net == network.spec.name}


def _register_core_spaces() -> None:
    register_feature_space(FeatureSpace(
        "pixel", "identification", _load_pixel, description="RGB pixels at the comparison size"))
    for name, (network, node, kind) in NETWORK_SPACES.items():
        companions = TAKAGI_COMPANIONS if network == "alexnet" and kind != "takagi" else ()
        register_feature_space(FeatureSpace(
            name, kind, partial(_load_network_node, network, node), companions=companions,
            description=f"{network} {node}"))


_register_core_spaces()
