"""Interrupts and resumes: SIGINT or SIGTERM end a command in one line; a resumed run says what it skips.

Under :func:`signals_interrupt` (the CLI runs every command in it) either signal raises
:class:`Interrupted` in the main thread, so every ``finally`` block runs: the atomic writers remove
their temporary files, and a feature store's ``.partial.h5`` keeps the rows already written (the
state a rerun resumes from). :func:`~brain2image.stages.base.stage_guard` names the stage the
interrupt left (:func:`interrupted_during`); the CLI prints :func:`interrupted_message` and exits
with :func:`interrupted_status` (130 for SIGINT, 143 for SIGTERM).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType

__all__ = ["Interrupted", "interrupted_during", "interrupted_message", "interrupted_status", "signals_interrupt",
           "say_skipped"]

logger = logging.getLogger(__name__)

#: The signals that end a command cleanly.
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """A command stopped by a signal (a ``KeyboardInterrupt``, so callers that catch one catch it too).

    Parameters
    ----------
    signum : int
        The signal (``SIGINT`` for Ctrl-C, ``SIGTERM``).
    stage : str, optional
        The stage it interrupted (set by :func:`interrupted_during`).
    """

    def __init__(self, signum: int = signal.SIGINT, stage: str | None = None) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)
        self.stage = stage


def interrupted_during(stage: str, error: KeyboardInterrupt) -> Interrupted:
    """``error`` as an :class:`Interrupted` naming ``stage`` (a stage named already, the innermost, is kept)."""
    if not isinstance(error, Interrupted):
        return Interrupted(signal.SIGINT, stage)
    if error.stage is None:
        error.stage = stage
    return error


def interrupted_status(error: KeyboardInterrupt) -> int:
    """The exit status of an interrupted command: 128 + the signal (130 for SIGINT, 143 for SIGTERM)."""
    return 128 + (error.signum if isinstance(error, Interrupted) else int(signal.SIGINT))


def interrupted_message(command: str, error: KeyboardInterrupt) -> str:
    """``brain2image <command>: interrupted during <stage>; finished work is kept — rerun ...`` (one line)."""
    stage = error.stage if isinstance(error, Interrupted) else None
    where = f" during {stage}" if stage else ""
    return (f"brain2image {command}: interrupted{where}; finished work is kept — rerun the same command "
            "to resume")


@contextlib.contextmanager
def signals_interrupt() -> Iterator[None]:
    """In the block, SIGINT and SIGTERM raise :class:`Interrupted`; the former handlers come back after it.

    Once one signal arrived, both are ignored while the block unwinds (its clean-up is not cut
    short by a second Ctrl-C). Outside the main thread (where Python allows no handler) it does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in SIGNALS}

    def handler(signum: int, frame: FrameType | None) -> None:
        for each in SIGNALS:
            signal.signal(each, signal.SIG_IGN)
        raise Interrupted(signum)

    for signum in SIGNALS:
        signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum, former in previous.items():
            signal.signal(signum, former if former is not None else signal.SIG_DFL)


def say_skipped(progress: bool, text: str) -> None:
    """Say what a resumed run skips (``features z: 600 of 700 images already done``).

    One line on stderr (beside any progress bar) when progress is shown; an INFO log line otherwise.
    """
    if progress:
        from tqdm.auto import tqdm

        tqdm.write(text, file=sys.stderr)
    else:
        logger.info(text)
