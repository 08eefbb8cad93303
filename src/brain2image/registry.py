"""A registry of named plug-ins of one kind: entry points of installed packages plus code registrations.

:class:`NamedRegistry` backs the reconstruction methods (:mod:`brain2image.methods`) and the
decoder targets (:mod:`brain2image.targets`): each plug-in is an instance of one base class with
a ``name`` attribute, registered through an entry-point group (the entry point names a subclass
or an instance) or in code. The built-ins come first, in a fixed order; the others follow in
registration order.
"""

from __future__ import annotations

import typing
from collections.abc import Sequence
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

from .errors import InvalidArgumentError

__all__ = ["NamedRegistry"]

T = TypeVar("T")


class NamedRegistry(Generic[T]):
    """Named plug-ins of one base class.

    Parameters
    ----------
    base : type
        The class every plug-in is an instance of (a subclass given is instantiated).
    group : str
        The entry-point group read on first use.
    what : str
        The kind of plug-in in messages (``"reconstruction method"``).
    builtins : tuple of str
        Names that must come from the entry points, first and in this order.
    required : tuple of str
        Class attributes every plug-in must set (``name`` always).
    """

    def __init__(self, base: type, group: str, what: str, builtins: tuple[str, ...],
                 required: tuple[str, ...] = ()) -> None:
        self.base, self.group, self.what, self.builtins = base, group, what, builtins
        self.required = ("name", *required)
        self._items: dict[str, T] = {}
        self._loaded = False

    def instance(self, item: Any, origin: str) -> T:
        """``item`` itself, or an instance of a subclass of :attr:`base`; checked for its attributes.

        Raises
        ------
        InvalidArgumentError
            For an object of another class, or one without a required attribute.
        """
        if isinstance(item, type) and issubclass(item, self.base):
            item = item()
        if not isinstance(item, self.base):
            raise InvalidArgumentError(f"{origin}: {item!r} is not a {self.base.__name__} (subclass or instance)")
        missing = [key for key in self.required if not getattr(item, key, None)]
        if missing:
            raise InvalidArgumentError(f"{origin}: {type(item).__name__} has no {' or '.join(missing)}; expected "
                                       f"class attributes {list(self.required)}")
        return typing.cast(T, item)

    def _load(self) -> None:
        """Register the plug-ins of the entry points, once (the built-ins among them)."""
        if self._loaded:
            return
        for entry in entry_points(group=self.group):
            item = self.instance(entry.load(), f"entry point {entry.name!r} of {self.group}")
            name = getattr(item, "name")
            if name != entry.name:
                raise InvalidArgumentError(f"entry point {entry.name!r} of {self.group} holds the {self.what} "
                                           f"{name!r}; expected the entry point's name")
            self._items.setdefault(name, item)
        missing = [name for name in self.builtins if name not in self._items]
        if missing:
            raise InvalidArgumentError(f"no {self.group} entry points for the built-in {self.what}s {missing} "
                                       "(entry points come from installed packages: reinstall brain2image with "
                                       "`make install`)")
        self._loaded = True

    def register(self, item: Any, *, replace: bool = False) -> T:
        """Register a plug-in (a subclass or an instance); returns the instance registered.

        Raises
        ------
        InvalidArgumentError
            For an object that is not a plug-in of this kind, or a name already taken (unless ``replace``).
        """
        self._load()
        instance = self.instance(item, f"register {self.what}")
        name = getattr(instance, "name")
        if name in self._items and not replace:
            raise InvalidArgumentError(f"a {self.what} named {name!r} is already registered")
        self._items[name] = instance
        return instance

    def unregister(self, name: str) -> None:
        """Remove a registered plug-in (tests; a plug-in replacing one)."""
        self._load()
        self._items.pop(name, None)

    def _rank(self, name: str) -> int:
        return self.builtins.index(name) if name in self.builtins else len(self.builtins)

    def items(self) -> tuple[T, ...]:
        """Every registered plug-in: the built-ins in order, then the others as registered."""
        self._load()
        return tuple(sorted(self._items.values(), key=lambda item: self._rank(getattr(item, "name"))))

    def names(self) -> tuple[str, ...]:
        """Names of every registered plug-in, in registry order."""
        return tuple(getattr(item, "name") for item in self.items())

    def get(self, name: str) -> T:
        """The plug-in ``name``.

        Raises
        ------
        InvalidArgumentError
            For an unknown name (the message lists the registered ones).
        """
        self._load()
        if name not in self._items:
            raise InvalidArgumentError(f"unknown {self.what} {name!r}; expected some of {list(self.names())}")
        return self._items[name]

    def find(self, name: str) -> T | None:
        """The plug-in ``name``, or None when none is registered under it."""
        self._load()
        return self._items.get(name)

    @property
    def choices(self) -> Sequence[str]:
        """A live view of the registered names (config choices that include plug-ins)."""
        return _LiveNames(self)


class _LiveNames(Sequence[str]):
    """The names of a registry, read again on every use."""

    def __init__(self, registry: NamedRegistry[Any]) -> None:
        self.registry = registry

    def __getitem__(self, index):
        return self.registry.names()[index]

    def __len__(self) -> int:
        return len(self.registry.names())

    def __repr__(self) -> str:
        return repr(self.registry.names())
