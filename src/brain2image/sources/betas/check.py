"""``prepare --check`` for precomputed betas: every file, and what prepare would refuse, one line each.

Checks the stimulus folder, the betas (header), the trials (count = the betas' trials, every
stimulus in ``stimuli/``), the mask and ROI masks (3D NIfTI, on or resampled to the betas' grid,
not empty), the test set (images shown twice or more, or the split column's test rows), and NaN
betas at the ROI voxels in the first trial of each session (NaN voxels outside the brain are the
same in every trial; ``prepare`` itself checks every trial).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import Brain2ImageError, DataFormatError
from ..nsd.check import ABSENT, MALFORMED, MISSING, OK, CheckItem, CheckReport
from ..roi_masks import RoiSpec, read_mask_image
from .study import BetasSettings, Study, open_study, select_sessions, trial_table
from .voxels import VoxelPlan, plan_voxels

__all__ = ["check_betas"]


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _probe(items: list[CheckItem], role: str, path: Path, probe: Callable[[], tuple[Any, str]]) -> Any:
    """Run ``probe()``; record ok / missing / malformed and return its value (None on a problem)."""
    try:
        value, detail = probe()
    except (Brain2ImageError, OSError, ValueError, KeyError) as error:
        status = MISSING if isinstance(error, FileNotFoundError) else MALFORMED
        items.append(CheckItem(role, path, status, _one_line(str(error))))
        return None
    items.append(CheckItem(role, path, OK, detail))
    return value


def _mask_shape(path: Path, role: str) -> tuple[None, str]:
    return None, f"shape {read_mask_image(path, role).shape}"


def _masks(items: list[CheckItem], settings: BetasSettings, specs: list[RoiSpec]) -> None:
    if settings.mask is None:
        items.append(CheckItem("mask", Path("[source] mask"), ABSENT, "optional: places array columns"))
    named = [("mask", settings.mask)] + [(f"roi {s.key}", s.mask) for s in specs]
    for role, path in named:
        if path is not None:
            _probe(items, role, path, partial(_mask_shape, path, role))


def _test_set(study: Study, keep: np.ndarray) -> tuple[None, str]:
    table = trial_table(study.trials, study.image_ids, keep, study.settings.identity_column or "", study.stimuli)
    test = table.is_test()
    repeated = int(np.unique(table.image_id[table.repeated()]).size)
    if not test.any() or test.all():
        how = "the split column's test rows" if table.split is not None else "images shown 2 or more times"
        raise DataFormatError(f"too few repeated images for a test set: {int(test.sum())} test and "
                              f"{int((~test).sum())} training trials ({how}; {repeated} images repeat)")
    return None, f"{int((~test).sum())} train trials, {int(test.sum())} test trials, {repeated} repeated images"


def _nan_voxels(study: Study, plan: VoxelPlan, keep: np.ndarray) -> tuple[None, str]:
    firsts = [int(np.flatnonzero((study.trials.session == s) & keep)[0]) for s in np.unique(study.trials.session[keep])]
    betas = study.betas.read(np.asarray(firsts), plan.columns)
    bad = ~np.isfinite(betas)
    if bad.any():
        raise DataFormatError(f"NaN/inf betas at {int(bad.any(axis=0).sum())} of {len(plan.columns)} ROI voxels "
                              "(first trial of each session); leave them out of the masks (set [source] mask to "
                              "the brain mask the betas were fitted in)")
    return None, f"finite at {len(plan.columns)} voxels (first trial of {len(firsts)} sessions)"


def check_betas(settings: BetasSettings, subject: str | None, sessions: int | list[int] | None) -> CheckReport:
    """Check every file a betas run needs; never raises for a problem (each is a row of the report)."""
    items: list[CheckItem] = []
    stimuli = settings.root / "stimuli"
    items.append(CheckItem("stimuli", stimuli, OK if stimuli.is_dir() else MISSING,
                           "" if stimuli.is_dir() else "expected the images the trials name under <root>/stimuli"))
    specs = _probe(items, "rois", Path("[source] roi"), lambda: (settings.roi_specs(), f"{len(settings.rois)} ROIs"))
    _masks(items, settings, specs or [])
    study: Study | None = _probe(items, "betas + trials", settings.betas, lambda: (
        open_study(settings, subject), f"trials {settings.trials}"))
    if study is None:
        return CheckReport(items)
    items[-1] = CheckItem("betas + trials", settings.betas, OK, f"{study.betas.n_trials} trials over "
                          f"{study.betas.spatial_shape}, {len(study.trials.session_labels)} sessions; every "
                          f"stimulus in {stimuli}")
    keep = _probe(items, "sessions", settings.trials, lambda: (
        select_sessions(study.trials, sessions, str(settings.trials)), "sessions asked for are present"))
    if keep is None:
        return CheckReport(items)
    _probe(items, "test set", settings.trials, lambda: _test_set(study, keep))
    if specs:
        plan = _probe(items, "voxels", settings.mask or settings.betas, lambda: (
            plan_voxels(study.betas, specs, settings.mask, str(settings.betas)), "ROIs placed on the betas' grid"))
        if plan is not None:
            _probe(items, "NaN betas", settings.betas, lambda: _nan_voxels(study, plan, keep))
    return CheckReport(items)
