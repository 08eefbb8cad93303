"""``prepare --check``: cheap checks of every file a prepare run needs (exists, opens, shape/dtype)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np

from ..errors import Brain2ImageError
from ._mgh import mgh_header
from .betas import beta_file_info
from .design import load_expdesign, read_responses
from .layout import HEMIS, TRIALS_PER_SESSION, NSDLayout
from .rois import load_roi_masks, parse_roi_spec

__all__ = ["CheckItem", "CheckReport", "check_nsd_tree"]

OK, MISSING, MALFORMED, ABSENT = "ok", "missing", "malformed", "absent"


@dataclass(frozen=True)
class CheckItem:
    """One file's status.

    Attributes
    ----------
    role : str
        What the file is for (``design``, ``behaviour``, ``roi``, ``betas s01``...).
    path : Path
    status : {"ok", "missing", "malformed", "absent"}
        ``absent``: an optional file is not there (not an error).
    detail : str
    """

    role: str
    path: Path
    status: str
    detail: str = ""


@dataclass
class CheckReport:
    """The result of :func:`check_nsd_tree`."""

    items: list[CheckItem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no needed file is missing or malformed."""
        return all(item.status in (OK, ABSENT) for item in self.items)

    @property
    def problems(self) -> list[CheckItem]:
        """Items that are missing or malformed."""
        return [item for item in self.items if item.status not in (OK, ABSENT)]

    def format_table(self) -> str:
        """A plain-text table: status, role, path, detail; then a summary line."""
        width = max([len(i.role) for i in self.items] + [4])
        lines = [f"{'status':<9} {'role':<{width}} path"]
        for item in self.items:
            detail = f"  ({item.detail})" if item.detail else ""
            lines.append(f"{item.status:<9} {item.role:<{width}} {item.path}{detail}")
        n_bad = len(self.problems)
        lines.append(f"{len(self.items)} files checked, "
                     + ("all ok" if n_bad == 0 else f"{n_bad} problem(s)"))
        return "\n".join(lines)


def _status_of(error: Exception) -> str:
    return MISSING if isinstance(error, FileNotFoundError) else MALFORMED


def _check(items: list[CheckItem], role: str, path: Path, probe, optional: bool = False) -> object:
    """Run ``probe()``; record ok / missing / malformed and return its value (None on failure)."""
    if not path.exists():
        items.append(CheckItem(role, path, ABSENT if optional else MISSING,
                               "optional" if optional else ""))
        return None
    try:
        value, detail = probe()
    except (Brain2ImageError, OSError, ValueError, KeyError) as error:
        items.append(CheckItem(role, path, _status_of(error), str(error)))
        return None
    items.append(CheckItem(role, path, OK, detail))
    return value


def _check_design(items: list[CheckItem], layout: NSDLayout, sessions: Sequence[int],
                  trials_per_session: int) -> None:
    """The experimental design (enough trials, a row for the subject) and the behaviour file."""
    n_needed = max(sessions) * trials_per_session if sessions else 0

    def design_probe():
        design = load_expdesign(layout.expdesign())
        if design.masterordering.size < n_needed:
            raise ValueError(f"masterordering has {design.masterordering.size} trials, "
                             f"{n_needed} needed")
        if design.subjectim.shape[0] < layout.subject:
            raise ValueError(f"subjectim has {design.subjectim.shape[0]} rows")
        return design, f"{design.masterordering.size} trials, subjectim {design.subjectim.shape}"

    _check(items, "design", layout.expdesign(), design_probe)

    def responses_probe():
        table = read_responses(layout.responses())
        counts = table.groupby("SESSION").size()
        bad = {int(s): int(counts.get(s, 0)) for s in sessions
               if s in counts.index and counts[s] != trials_per_session}
        if bad:
            raise ValueError(f"trials per session {bad}, expected {trials_per_session}")
        return table, f"{len(table)} rows"

    _check(items, "behaviour", layout.responses(), responses_probe, optional=True)


def _check_rois(items: list[CheckItem], layout: NSDLayout, rois: Sequence[str]) -> tuple[int, ...] | None:
    """Every ROI atlas (and its label table); returns the atlases' shape, None if none could be read."""
    shape: tuple[int, ...] | None = None
    for spec in [parse_roi_spec(r) for r in rois]:
        paths = ([layout.fsaverage_label(h, spec.atlas) for h in HEMIS] if layout.is_surface
                 else [layout.roi_volume(spec.atlas)])
        ctab = layout.label_ctab(spec.atlas)
        if spec.label is not None and ctab not in [i.path for i in items]:
            _check(items, "labels", ctab, lambda: (None, ""), optional=True)
        for path in paths:
            if not path.exists():
                items.append(CheckItem(f"roi {spec}", path, MISSING))
        if not all(p.exists() for p in paths):
            continue

        def roi_probe(spec=spec):
            masks, _, roi_shape = load_roi_masks(layout, [spec])
            return roi_shape, f"shape {roi_shape}, {int(masks[0].mask.sum())} voxels"

        found = _check(items, f"roi {spec}", paths[0], roi_probe)
        if found is not None and shape is None:
            shape = cast(tuple[int, ...], found)
    return shape


def _check_ncsnr(items: list[CheckItem], layout: NSDLayout, shape: tuple[int, ...] | None) -> None:
    """The noise-ceiling SNR map(s), optional; their shape must match the atlases'."""
    if not layout.is_surface:
        def ncsnr_probe():
            import nibabel as nib
            image_shape = cast(Any, nib.load(layout.ncsnr())).shape
            if shape is not None and tuple(image_shape[:3]) != tuple(shape):
                raise ValueError(f"shape {image_shape}, expected {shape}")
            return None, f"shape {image_shape}"

        _check(items, "ncsnr", layout.ncsnr(), ncsnr_probe, optional=True)
        return
    for index, hemi in enumerate(HEMIS):
        def surface_ncsnr_probe(hemi=hemi, index=index):
            image_shape, _, _ = mgh_header(layout.surface_ncsnr(hemi))
            if shape is not None and (image_shape[0] != shape[index] or any(n != 1 for n in image_shape[1:])):
                raise ValueError(f"shape {image_shape}, expected ({shape[index]}, 1, 1)")
            return None, f"shape {image_shape}"

        _check(items, f"ncsnr {hemi}", layout.surface_ncsnr(hemi), surface_ncsnr_probe, optional=True)


def _check_betas(items: list[CheckItem], layout: NSDLayout, sessions: Sequence[int], beta_format: str,
                 shape: tuple[int, ...] | None, trials_per_session: int) -> None:
    """Each session's beta file(s): spatial shape, trial count and dtype, from the header."""
    fmt = "mgh" if layout.is_surface else beta_format
    for session in sessions:
        for index, path in enumerate(layout.session_files(session, beta_format)):
            def beta_probe(path=path, index=index):
                info = beta_file_info(path, fmt)
                want = shape[index] if (shape is not None and layout.is_surface) else shape
                got = info.spatial_shape[0] if layout.is_surface else tuple(info.spatial_shape)
                if want is not None and got != want:
                    raise ValueError(f"spatial shape {got} differs from the ROI atlases' {want}")
                if info.n_trials != trials_per_session:
                    raise ValueError(f"{info.n_trials} trials, expected {trials_per_session}")
                if fmt != "mgh" and not np.issubdtype(info.dtype, np.integer):
                    detail = f", dtype {info.dtype} (int16 expected)"
                else:
                    detail = f", {info.dtype}"
                return None, f"{info.spatial_shape} x {info.n_trials} trials{detail}"

            _check(items, f"betas s{session:02d}", path, beta_probe)


def check_nsd_tree(layout: NSDLayout, sessions: Sequence[int], rois: Sequence[str],
                   beta_format: str = "hdf5",
                   trials_per_session: int = TRIALS_PER_SESSION) -> CheckReport:
    """Check every file a prepare run needs, reading headers only.

    Parameters
    ----------
    layout : NSDLayout
    sessions : sequence of int
        1-based sessions.
    rois : sequence of str
        ROI specs (``streams:early``, ``nsdgeneral``).
    beta_format : {"hdf5", "nifti"}
        Ignored on fsaverage (``.mgh``).
    trials_per_session : int

    Returns
    -------
    CheckReport
        One item per file; ``report.ok`` is False if any is missing or malformed.
    """
    items: list[CheckItem] = []
    _check_design(items, layout, sessions, trials_per_session)
    shape = _check_rois(items, layout, rois)
    _check_ncsnr(items, layout, shape)
    _check_betas(items, layout, sessions, beta_format, shape, trials_per_session)
    return CheckReport(items)
