"""The one place that decides how many CPU threads a run computes with.

Float sums (torch's intra-op reductions, BLAS products) may be added in another order with
another thread count, so the count is part of what a run computes. The rule, for the plain run,
every stage command and every Ray worker alike:

- the config's ``threads`` when it sets one;
- else :func:`default_threads` of the process that starts the run (torch's default there: this
  machine's CPUs, or ``OMP_NUM_THREADS``). ``brain2image run --ray`` resolves it once, on the
  machine that starts the run, and every worker uses that count, whatever CPUs its task holds.

:func:`pinned_threads` sets both torch's intra-op threads and the BLAS / OpenMP thread pools
(through threadpoolctl) to that count for a block, and restores them afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

__all__ = ["default_threads", "resolve_threads", "pinned_threads"]


def default_threads() -> int:
    """The threads a run uses when its config sets none: torch's current intra-op count here."""
    import torch

    return max(1, int(torch.get_num_threads()))


def resolve_threads(threads: int | None) -> int:
    """``threads`` when given (≥ 1), else :func:`default_threads`."""
    return int(threads) if threads else default_threads()


@contextlib.contextmanager
def pinned_threads(threads: int | None) -> Iterator[int]:
    """Run the block with :func:`resolve_threads` ``(threads)`` torch and BLAS threads; yields the count.

    The previous torch count and thread-pool limits are restored on leaving.
    """
    import torch
    from threadpoolctl import threadpool_limits

    count = resolve_threads(threads)
    before = torch.get_num_threads()
    with threadpool_limits(limits=count):
        torch.set_num_threads(count)
        try:
            yield count
        finally:
            torch.set_num_threads(before)
