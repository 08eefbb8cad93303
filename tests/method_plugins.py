"""A reconstruction method registered from outside the core, for the tests: ``z_plus_c`` at strength 0.5."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from brain2image.ldm.methods import ZPlusC
from brain2image.methods import ReconstructionMethod, register_method, unregister_method

__all__ = ["HalfStrength", "methods_registered"]


class HalfStrength(ZPlusC):
    """``z_plus_c`` at img2img strength 0.5, whatever ``[reconstruction] strength`` says."""

    name = "z_plus_c_half"
    label = "z + c (strength 0.5)"
    strength = 0.5


@contextlib.contextmanager
def methods_registered(*methods: ReconstructionMethod | type[ReconstructionMethod]) -> Iterator[None]:
    """Register ``methods`` (in order) for the block, then remove them again."""
    names = []
    try:
        for method in methods:
            register_method(method)
            names.append(method.name)
        yield
    finally:
        for name in names:
            unregister_method(name)
