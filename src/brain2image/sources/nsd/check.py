"""``prepare --check``: cheap checks of every file a run needs (exists, opens, shape, dtype).

Covers the design and behaviour files, the sessions the subject has (a session listed by
``responses.tsv`` or the design whose betas are missing is reported against its beta file), the
brainmask, ROI atlases and label tables, ncsnr, every session's betas (headers only: NaN / inf in
float betas are found by ``prepare`` itself, which reads the values), the stimulus table, the
stimulus brick and the COCO captions.

Spatial shapes are settled by a vote, so that the file blamed is the one that disagrees: every
anatomical file (brainmask, each ROI atlas, ncsnr) has one vote and the beta files together have
one (the shape most of them share); the shape with the most votes is the reference, a tie going to
the betas' header, then the brainmask, then the first ROI. Each file of another shape is reported
with the reference as the expected value (per hemisphere on fsaverage).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np

from ...errors import Brain2ImageError
from ._mgh import mgh_header
from .betas import beta_file_info
from .design import ExpDesign, format_sessions, load_expdesign, read_responses, trials_from_expdesign
from .layout import HEMIS, TRIALS_PER_SESSION, NSDLayout
from .prepare import find_session_gap
from .rois import BUILTIN_LABELS, load_roi_masks, parse_roi_spec, read_ctab
from .stimuli import captions_file, check_stimuli, read_caption_file, read_stim_info, require_captions

__all__ = ["CheckItem", "CheckReport", "check_nsd_tree"]

OK, MISSING, MALFORMED, ABSENT = "ok", "missing", "malformed", "absent"
#: COCO splits whose captions files NSD images come from.
CAPTION_SPLITS = ("train2017", "val2017")
#: A probe returns (value, detail) or raises.
Probe = Callable[[], tuple[Any, str]]


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
        What was found; for a problem, what was expected.
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

    def problem_lines(self) -> list[str]:
        """One line per problem: ``path: role status: detail``."""
        return [f"{item.path}: {item.role} {item.status}" + (f": {item.detail}" if item.detail else "")
                for item in self.problems]

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


@dataclass
class _Vote:
    """The spatial shape one file has, for the vote of :meth:`_Checker.settle_shapes`."""

    indices: list[int]
    group: str
    value: Any
    path: Path
    name: str
    betas: bool


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


class _Checker:
    """Collects the items of one check and the shapes they vote for."""

    def __init__(self, layout: NSDLayout, beta_format: str, trials_per_session: int) -> None:
        self.layout = layout
        self.beta_format = beta_format
        self.tps = trials_per_session
        self.items: list[CheckItem] = []
        self.votes: dict[Path, _Vote] = {}

    def check(self, role: str, path: Path, probe: Probe, optional: bool = False,
              missing_detail: str = "") -> Any:
        """Run ``probe()``; record ok / missing / malformed and return its value (None on failure)."""
        if not path.exists():
            self.items.append(CheckItem(role, path, ABSENT if optional else MISSING,
                                        "optional" if optional else missing_detail))
            return None
        try:
            value, detail = probe()
        except (Brain2ImageError, OSError, ValueError, KeyError) as error:
            status = MISSING if isinstance(error, FileNotFoundError) else MALFORMED
            self.items.append(CheckItem(role, path, status, _one_line(str(error))))
            return None
        self.items.append(CheckItem(role, path, OK, detail))
        return value

    def vote(self, group: str, value: Any, path: Path, betas: bool = False) -> None:
        """Record the shape of ``path`` for the item just added (one vote per file)."""
        index = len(self.items) - 1
        if path in self.votes:
            self.votes[path].indices.append(index)
        else:
            self.votes[path] = _Vote([index], group, value, path, self.items[index].role, betas)

    def settle_shapes(self) -> None:
        """Mark every file whose shape is not its group's reference as malformed."""
        for group in dict.fromkeys(v.group for v in self.votes.values()):
            votes = [v for v in self.votes.values() if v.group == group]
            reference, supporters = _reference(votes)
            for vote in votes:
                if vote.value == reference:
                    continue
                what = (f"{vote.value} vertices, expected {reference}" if self.layout.is_surface
                        else f"shape (X, Y, Z) {vote.value}, expected {reference}")
                for index in vote.indices:
                    role = self.items[index].role
                    self.items[index] = CheckItem(role, vote.path, MALFORMED,
                                                  f"{what} like {', '.join(supporters)}")


def _reference(votes: list[_Vote]) -> tuple[Any, list[str]]:
    """The shape of a group and who has it: the betas' majority is one voter, ranked first."""
    voters: list[tuple[Any, str]] = []
    betas = [v.value for v in votes if v.betas]
    if betas:
        counts = Counter(betas)
        voters.append((next(b for b in betas if counts[b] == max(counts.values())), "betas"))
    voters += [(v.value, v.name) for v in votes if not v.betas]
    counts = Counter(value for value, _ in voters)
    reference = next(value for value, _ in voters if counts[value] == max(counts.values()))
    return reference, [name for value, name in voters if value == reference]


def _plan_sessions(layout: NSDLayout, sessions: int | Sequence[int] | None, beta_format: str,
                   tps: int) -> tuple[list[int], dict[int, str]]:
    """Sessions whose files are checked, and for each listed session not on disk, why it is needed."""
    if sessions is not None:
        if isinstance(sessions, (int, np.integer)):
            return list(range(1, int(sessions) + 1)), {}
        return sorted({int(s) for s in sessions}), {}
    try:
        gap = find_session_gap(layout, beta_format, tps)
    except Brain2ImageError:  # the design / behaviour items report why
        return layout.sessions_on_disk(beta_format), {}
    note = f"{gap.expected.describe()}; {gap.advice()}"
    return sorted(set(gap.on_disk) | set(gap.expected.sessions)), {s: note for s in gap.missing}


def _check_design(chk: _Checker, sessions: Sequence[int]) -> ExpDesign | None:
    """The experimental design (enough trials, a row for the subject) and the behaviour file."""
    layout, tps = chk.layout, chk.tps
    n_needed = max(sessions) * tps if sessions else 0

    def design_probe() -> tuple[ExpDesign, str]:
        design = load_expdesign(layout.expdesign())
        if design.masterordering.size < n_needed:
            raise ValueError(f"field 'masterordering' has {design.masterordering.size} trials, expected "
                             f"at least {n_needed} (session {max(sessions)} of {tps} trials)")
        if design.subjectim.shape[0] < layout.subject:
            raise ValueError(f"field 'subjectim' has {design.subjectim.shape[0]} rows, expected at least "
                             f"{layout.subject} (one per subject)")
        return design, (f"{design.masterordering.size} trials ({design.masterordering.size // tps} sessions "
                        f"of {tps}), subjectim {design.subjectim.shape}")

    design = chk.check("design", layout.expdesign(), design_probe)

    def responses_probe() -> tuple[None, str]:
        table = read_responses(layout.responses())
        counts = table.groupby("SESSION").size()
        bad = {int(s): int(counts[s]) for s in sessions if s in counts.index and counts[s] != tps}
        if bad:
            raise ValueError(f"trials per session {bad}, expected {tps}")
        return None, f"{len(table)} rows, sessions {format_sessions(counts.index)}"

    chk.check("behaviour", layout.responses(), responses_probe, optional=True)
    return cast(ExpDesign | None, design)


def _volume_shape_probe(path: Path) -> Probe:
    """Probe of a 3-D NIfTI map (brainmask, ncsnr): its (X, Y, Z) shape."""
    def probe() -> tuple[tuple[int, ...], str]:
        import nibabel as nib

        shape = tuple(int(n) for n in cast(Any, nib.load(path)).shape)
        if len(shape) != 3 and not (len(shape) == 4 and shape[3] == 1):
            raise ValueError(f"shape {shape}, expected 3-D (X, Y, Z)")
        return shape[:3], f"shape {shape[:3]}"

    return probe


def _check_labels(chk: _Checker, atlas: str) -> bool:
    """The atlas's label table (optional when built in); True when labels can be resolved."""
    ctab = chk.layout.label_ctab(atlas)
    previous = [i for i in chk.items if i.path == ctab]
    if previous:
        return previous[0].status in (OK, ABSENT)
    builtin = atlas in BUILTIN_LABELS

    def ctab_probe() -> tuple[dict[int, str], str]:
        table = read_ctab(ctab)
        return table, f"{len(table)} labels"

    table = chk.check("labels", ctab, ctab_probe, optional=builtin,
                      missing_detail=f"expected a 'value name' table (no built-in table for {atlas!r})")
    return table is not None or (builtin and not ctab.exists())


def _check_rois(chk: _Checker, rois: Sequence[str]) -> None:
    """Every ROI atlas (label, non-empty), voting with its shape; the brainmask first (volumes)."""
    layout = chk.layout
    if not layout.is_surface:
        mask_shape = chk.check("brainmask", layout.brainmask(), _volume_shape_probe(layout.brainmask()),
                               optional=True)
        if mask_shape is not None:
            chk.vote("volume", mask_shape, layout.brainmask())
    for spec in [parse_roi_spec(r) for r in rois]:
        paths = ([layout.fsaverage_label(h, spec.atlas) for h in HEMIS] if layout.is_surface
                 else [layout.roi_volume(spec.atlas)])
        labelled = spec.label is None or _check_labels(chk, spec.atlas)
        absent = [p for p in paths if not p.exists()]
        for path in absent:
            chk.items.append(CheckItem(f"roi {spec}", path, MISSING, "expected the ROI atlas"))
        if absent:
            continue

        def roi_probe(spec: Any = spec, labelled: bool = labelled) -> tuple[tuple[int, ...], str]:
            probe_spec = spec if labelled else parse_roi_spec(spec.atlas)
            masks, _, roi_shape = load_roi_masks(layout, [probe_spec])
            note = "" if labelled else ", labels not checked"
            unit = "vertices" if layout.is_surface else "voxels"
            return roi_shape, f"shape {roi_shape}, {int(masks[0].mask.sum())} {unit}{note}"

        shape = chk.check(f"roi {spec}", paths[0], roi_probe)
        if shape is None:
            continue
        if layout.is_surface:
            for hemi, path, n in zip(HEMIS, paths, shape, strict=True):
                chk.vote(hemi, n, path)
        else:
            chk.vote("volume", shape, paths[0])


def _check_ncsnr(chk: _Checker) -> None:
    """The noise-ceiling SNR map(s), optional, voting with their shape."""
    layout = chk.layout
    if not layout.is_surface:
        shape = chk.check("ncsnr", layout.ncsnr(), _volume_shape_probe(layout.ncsnr()), optional=True)
        if shape is not None:
            chk.vote("volume", shape, layout.ncsnr())
        return
    for hemi in HEMIS:
        path = layout.surface_ncsnr(hemi)

        def surface_probe(path: Path = path) -> tuple[int, str]:
            image_shape, _, _ = mgh_header(path)
            if len(image_shape) != 3 or any(n != 1 for n in image_shape[1:]):
                raise ValueError(f"shape {image_shape}, expected (n_vertices, 1, 1)")
            return image_shape[0], f"shape {image_shape}"

        n_vertices = chk.check(f"ncsnr {hemi}", path, surface_probe, optional=True)
        if n_vertices is not None:
            chk.vote(hemi, n_vertices, path)


def _check_betas(chk: _Checker, sessions: Sequence[int], notes: dict[int, str]) -> None:
    """Each session's beta file(s): trial count and dtype from the header, voting with their shape."""
    layout = chk.layout
    fmt = "mgh" if layout.is_surface else chk.beta_format
    if not sessions:
        chk.items.append(CheckItem("betas", layout.betas_dir(), MISSING,
                                   f"no beta files ({fmt}) in this folder, expected betas_sessionNN"))
    for session in sessions:
        for hemi, path in zip(HEMIS if layout.is_surface else ("volume",),
                              layout.session_files(session, chk.beta_format), strict=True):
            def beta_probe(path: Path = path) -> tuple[Any, str]:
                info = beta_file_info(path, fmt)
                if info.n_trials != chk.tps:
                    raise ValueError(f"{info.n_trials} trials, expected {chk.tps}")
                kind = "int16 expected" if fmt != "mgh" and not np.issubdtype(info.dtype, np.integer) else ""
                detail = f"{info.spatial_shape} x {info.n_trials} trials, {info.dtype}"
                value = info.spatial_shape[0] if layout.is_surface else tuple(info.spatial_shape)
                return value, detail + (f" ({kind}; prepare stops on NaN / inf)" if kind else "")

            value = chk.check(f"betas s{session:02d}", path, beta_probe,
                              missing_detail=notes.get(session, "requested with --sessions"))
            if value is not None:
                chk.vote(hemi, value, path, betas=True)


def _design_ids(chk: _Checker, design: ExpDesign | None, sessions: Sequence[int]) -> np.ndarray | None:
    """The 0-based 73k ids the subject saw in the checked sessions the design covers."""
    if design is None or design.subjectim.shape[0] < chk.layout.subject:
        return None
    covered = [s for s in sessions if s * chk.tps <= design.masterordering.size]
    if not covered:
        return None
    table = trials_from_expdesign(design, chk.layout.subject, covered, chk.tps)
    return np.unique(table["id73k"].to_numpy(np.int64))


def _check_stimuli(chk: _Checker, ids: np.ndarray | None) -> None:
    """The brick (header, every id in range), the stimulus table and the captions of every image."""
    layout = chk.layout
    used = np.zeros(0, np.int64) if ids is None else ids

    def brick_probe() -> tuple[None, str]:
        shape, dtype = check_stimuli(layout.stimuli(), used)
        return None, f"imgBrick {shape} {dtype}, {len(used)} ids in range"

    def info_probe() -> tuple[Any, str]:
        rows = read_stim_info(layout.root, used)
        return rows, f"cocoId and cocoSplit of {len(rows)} images"

    chk.check("stimuli", layout.stimuli(), brick_probe)
    rows = chk.check("stimulus info", layout.stim_info(), info_probe)
    _check_captions(chk, None if ids is None else rows)


def _check_captions(chk: _Checker, rows: Any) -> None:
    """Each COCO captions file: valid, with a caption for every image of its split in ``rows``.

    ``rows`` (from :func:`read_stim_info`) None: the images are not known, only validity is checked.
    A split no image comes from is optional.
    """
    for split in CAPTION_SPLITS:
        path = captions_file(chk.layout.root, split)
        needed = None if rows is None else rows[rows["cocoSplit"] == split]

        def captions_probe(path: Path = path, needed: Any = needed) -> tuple[None, str]:
            table = read_caption_file(path)
            if needed is not None:
                require_captions(path, table, needed)
            checked = "" if needed is None else f", every one of {len(needed)} images has one"
            return None, f"captions of {len(table)} images{checked}"

        chk.check(f"captions {split}", path, captions_probe,
                  optional=needed is not None and len(needed) == 0,
                  missing_detail=f"expected COCO captions_{split}.json (from annotations_trainval2017.zip)")


def check_nsd_tree(layout: NSDLayout, sessions: int | Sequence[int] | None, rois: Sequence[str],
                   beta_format: str = "hdf5",
                   trials_per_session: int = TRIALS_PER_SESSION) -> CheckReport:
    """Check every file a run needs, reading headers only (and the captions).

    Parameters
    ----------
    layout : NSDLayout
    sessions : int, sequence of int or None
        A count (1..n), 1-based sessions, or None: every session on disk and every session the
        subject's ``responses.tsv`` (or design) lists, a listed one without betas being a problem.
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
    chk = _Checker(layout, beta_format, trials_per_session)
    session_list, notes = _plan_sessions(layout, sessions, beta_format, trials_per_session)
    design = _check_design(chk, session_list)
    _check_rois(chk, rois)
    _check_ncsnr(chk)
    _check_betas(chk, session_list, notes)
    chk.settle_shapes()
    _check_stimuli(chk, _design_ids(chk, design, session_list))
    return CheckReport(chk.items)
