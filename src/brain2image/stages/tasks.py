"""How a stage splits into tasks: what a run asks for (:class:`Split`) and one task's piece (:class:`TaskSpec`).

A cluster runner asks each stage for its tasks (:meth:`Stage.tasks <brain2image.stages.Stage.tasks>`):
a list of steps, each a list of :class:`TaskSpec` that may run at once, each step after the one
before. A task runs :func:`~brain2image.stages.run_stage` with its ``shard`` and a context whose
``part`` is the spec's ``part`` (the stage's own typed value: which decoder, which encoding model);
once every task is done, :meth:`Stage.finish <brain2image.stages.Stage.finish>` joins their outputs.
A stage that does not split returns one task, the whole stage (``TaskSpec()``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidArgumentError

__all__ = ["Split", "TaskSpec", "shard_tasks", "shard_count"]


@dataclass(frozen=True)
class Split:
    """How finely a run asks the stages to split (``brain2image run --ray --shards N --target-parts N``).

    Attributes
    ----------
    shards : int
        Parts of the image ids (or other rows) a stage may split its work into (1: none).
    target_parts : int
        Parts of a decoder's targets (the columns it solves) a stage may split a fit into (1: none).
    """

    shards: int = 1
    target_parts: int = 1

    def __post_init__(self) -> None:
        for name in ("shards", "target_parts"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidArgumentError(f"split: {name} is {value!r}; expected an integer of at least 1")


@dataclass(frozen=True)
class TaskSpec:
    """One task of a stage: its shard of the image ids and its own piece (both ``None``: the whole stage).

    Attributes
    ----------
    shard : (i, n), optional
        Part ``i`` of ``n`` (1-based) of the image ids, given to :meth:`Stage.run` (a ``shardable`` stage).
    part : any, optional
        The stage's own description of the piece (a frozen dataclass of the stage, e.g. one decoder
        or one encoding model), read back by the stage as ``ctx.part``. ``str(part)`` names it in messages.
    """

    shard: tuple[int, int] | None = None
    part: Any = None

    @property
    def label(self) -> str:
        """The piece in messages: ``2/4`` (a shard), ``str(part)`` (``c 3/4``), both, or ``""`` (the whole)."""
        words = ([f"{self.shard[0]}/{self.shard[1]}"] if self.shard is not None else []) + \
            ([str(self.part)] if self.part is not None else [])
        return " ".join(words)


def shard_tasks(n: int) -> list[list[TaskSpec]]:
    """One step of ``n`` tasks, one per shard ``(i, n)`` of the image ids; for ``n = 1`` the whole stage."""
    if n <= 1:
        return [[TaskSpec()]]
    return [[TaskSpec(shard=(i, n)) for i in range(1, n + 1)]]


def shard_count(tasks: Iterable[TaskSpec]) -> int | None:
    """The ``n`` of the shards among ``tasks`` (``None``: none is a shard).

    Raises
    ------
    InvalidArgumentError
        For shards of several counts.
    """
    counts = {task.shard[1] for task in tasks if task.shard is not None}
    if len(counts) > 1:
        raise InvalidArgumentError(f"tasks of {sorted(counts)} shards; expected the shards of one split")
    return counts.pop() if counts else None
