"""The reconstruction methods and what each one needs (the one place that decides it)."""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum

from .errors import InvalidArgumentError

__all__ = ["Method", "DIFFUSION_METHODS", "ALL_METHODS", "parse_methods", "needed_inputs"]


class Method(str, Enum):
    """A reconstruction method; its value is the name used in files, configs and the CLI.

    - ``z_only``: the VAE decoding of the decoded z;
    - ``c_only``: text-to-image from the decoded c;
    - ``z_plus_c``: img2img from the decoded z, guided by the decoded c (the paper's method);
    - ``oracle``: ``z_plus_c`` from the true z and c (an upper bound).
    """

    Z_ONLY = "z_only"
    C_ONLY = "c_only"
    Z_PLUS_C = "z_plus_c"
    ORACLE = "oracle"

    def __str__(self) -> str:
        return self.value

    @property
    def inputs(self) -> tuple[str, ...]:
        """Feature arrays the method reads: some of ``z``, ``c``, ``z_true``, ``c_true``."""
        return _INPUTS[self]

    @property
    def uses_diffusion(self) -> bool:
        """Whether the method runs the diffusion model (``z_only`` is a VAE decoding)."""
        return self is not Method.Z_ONLY


_INPUTS: dict[Method, tuple[str, ...]] = {
    Method.Z_ONLY: ("z",),
    Method.C_ONLY: ("c",),
    Method.Z_PLUS_C: ("z", "c"),
    Method.ORACLE: ("z_true", "c_true"),
}

#: Every method, in table order.
ALL_METHODS: tuple[Method, ...] = tuple(Method)
#: The methods that draw with the diffusion model.
DIFFUSION_METHODS: tuple[Method, ...] = tuple(m for m in Method if m.uses_diffusion)


def parse_methods(names: Iterable[str | Method]) -> tuple[Method, ...]:
    """Methods from their names, in the given order.

    Raises
    ------
    InvalidArgumentError
        For an unknown name (the message lists the known ones).
    """
    out = []
    for name in names:
        try:
            out.append(Method(str(name)))
        except ValueError:
            raise InvalidArgumentError(
                f"unknown reconstruction method {str(name)!r}; expected some of {[m.value for m in Method]}"
            ) from None
    return tuple(out)


def needed_inputs(methods: Iterable[str | Method]) -> tuple[str, ...]:
    """The union of the inputs of ``methods``, in the order ``z, c, z_true, c_true``."""
    wanted = {name for m in parse_methods(methods) for name in m.inputs}
    return tuple(name for name in ("z", "c", "z_true", "c_true") if name in wanted)
