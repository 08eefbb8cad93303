"""Child process of the fault-injection suite: ``brain2image run`` that kills itself with SIGKILL on cue.

Usage::

    python fault_child.py CONFIG --count COUNTS.json
    python fault_child.py CONFIG --kill-after-stage STAGE
    python fault_child.py CONFIG --kill-at STAGE HOOK WHEN K [--signal SIGINT] [--progress]

``--count`` runs the whole pipeline and writes, per stage, how many times each hook of
:data:`HOOKS` was called. ``--kill-after-stage`` sends SIGKILL to the process as soon as the
stage returns (a stage boundary). ``--kill-at`` sends it at the K-th call of HOOK made while STAGE
runs, ``before`` or ``after`` the call: inside a stage's heavy work, between a temporary file's
write and its rename (``os.replace`` before), or in the middle of an HDF5 write whose buffers are
not flushed (``Dataset.__setitem__`` after). ``--signal`` sends another signal than SIGKILL
(SIGINT, SIGTERM: the command then ends by itself). The run has ``--no-progress`` unless
``--progress``. The pipeline itself is the real one (:func:`brain2image.cli.main`), only wrapped.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import os
import signal
import sys
from collections import Counter
from typing import Any

#: Hooks, as ``module:attribute path``: the calls at which a kill can land.
HOOKS = {
    "store_write": "brain2image.formats.feature_store:FeatureStore.write",
    "hdf5_write": "h5py._hl.dataset:Dataset.__setitem__",
    "rename": "os:replace",
    "ridge_fold": "brain2image.ridge._solvers:_fold_errors",
    "png_write": "brain2image.formats.recon_index:ReconFolder.write_image",
    "png_read": "brain2image.evaluation.evaluate:_read_png",
    "encoding_space": "brain2image.encoding.analysis:fit_space",
}


def _owner(spec: str) -> tuple[Any, str]:
    module_name, path = spec.split(":")
    owner: Any = importlib.import_module(module_name)
    *parents, name = path.split(".")
    for parent in parents:
        owner = getattr(owner, parent)
    return owner, name


def _kill(signum: int = signal.SIGKILL) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signum)


class Injector:
    """Tracks the running stage and counts (or kills at) the calls of the hooks."""

    def __init__(self) -> None:
        self.stage = "start"
        self.counts: Counter[str] = Counter()
        self.kill_at: tuple[str, str, str, int] | None = None
        self.kill_after_stage: str | None = None
        self.signum = signal.SIGKILL

    def install(self) -> None:
        """Wrap every hook and ``brain2image.stages.run_stage``."""
        for hook, spec in HOOKS.items():
            owner, name = _owner(spec)
            setattr(owner, name, self._wrapped(hook, getattr(owner, name)))
        import brain2image.stages as stages

        run_stage = stages.run_stage

        @functools.wraps(run_stage)
        def tracked(stage: Any, ctx: Any, *args: Any, **kwargs: Any) -> Any:
            self.stage = stage.name
            result = run_stage(stage, ctx, *args, **kwargs)
            if stage.name == self.kill_after_stage:
                _kill(self.signum)
            return result

        stages.run_stage = tracked

    def _wrapped(self, hook: str, function: Any) -> Any:
        @functools.wraps(function)
        def counted(*args: Any, **kwargs: Any) -> Any:
            key = f"{self.stage}/{hook}"
            self.counts[key] += 1
            cue = self.kill_at
            due = cue is not None and (cue[0], cue[1]) == (self.stage, hook) and self.counts[key] == cue[3]
            if due and cue[2] == "before":
                _kill(self.signum)
            result = function(*args, **kwargs)
            if due and cue[2] == "after":
                _kill(self.signum)
            return result

        return counted


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    parser.add_argument("--count")
    parser.add_argument("--kill-after-stage")
    parser.add_argument("--kill-at", nargs=4, metavar=("STAGE", "HOOK", "WHEN", "K"))
    parser.add_argument("--signal", default="SIGKILL", choices=["SIGKILL", "SIGINT", "SIGTERM"])
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args()
    injector = Injector()
    injector.signum = signal.Signals[args.signal]
    injector.kill_after_stage = args.kill_after_stage
    if args.kill_at:
        stage, hook, when, k = args.kill_at
        injector.kill_at = (stage, hook, when, int(k))
    injector.install()
    from brain2image.cli import main as cli_main

    status = cli_main([*([] if args.progress else ["--no-progress"]), "run", args.config])
    if args.count:
        with open(args.count, "w") as f:
            json.dump(dict(injector.counts), f, indent=1, sort_keys=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
