"""The bad-input table of a lab's own data: BIDS + fMRIPrep (``--source bids``) and precomputed betas (``betas``).

Every case starts from a copy of a small, valid study (a BIDS tree written by ``bids_tree_writer``,
ROI masks, and precomputed betas with their trials table on the same grid), breaks one thing and
runs ``brain2image prepare`` on it through the real CLI. For each case the test asserts, as
``tests/test_bad_inputs.py`` does:

- exit status 2 and exactly one line on stderr, ``brain2image prepare: error: ...``, with no
  traceback, which contains the words that name the file (or key) at fault and what to do;
- nothing half-written: every file of the case's folder is byte-for-byte as before (same names,
  same sizes, same modification times), no temporary or scratch file is left, the ``--out`` file
  is absent.

``OWN_DATA_BAD_INPUTS`` is the table; a last test runs ``prepare --check`` on a tree with several
problems (exit 1, the table on stdout, one line per problem on stderr).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from bids_tree_writer import AFFINE, SHAPE, TASK, write_bids_tree
from study_fixtures import one_error_line
from test_bad_inputs import BadInput  # the row type of the NSD table: name, argv, expected words, breakage

from brain2image.cli import main

#: The run every BIDS breakage touches (the tree has sessions 01, 02 of runs 1, 2).
SES, RUN = "02", 2
RUN_NAME = f"sub-01_ses-{SES}_task-{TASK}_run-{RUN}"


@dataclass(frozen=True)
class Study:
    """Paths of one case's copy of the valid study."""

    root: Path

    @property
    def bids(self) -> Path:
        return self.root / "bids"

    @property
    def fmriprep(self) -> Path:
        return self.bids / "derivatives" / "fmriprep"

    def func(self, suffix: str, derivative: bool = True, ses: str = SES, run: int = RUN) -> Path:
        """A run's file, ``suffix`` like ``events.tsv`` or ``space-T1w_desc-preproc_bold.nii.gz``."""
        base = (self.fmriprep if derivative else self.bids) / "sub-01" / f"ses-{ses}" / "func"
        return base / f"sub-01_ses-{ses}_task-{TASK}_run-{run}_{suffix}"

    @property
    def events(self) -> Path:
        return self.func("events.tsv", derivative=False)

    @property
    def bold(self) -> Path:
        return self.func("space-T1w_desc-preproc_bold.nii.gz")

    @property
    def brain_mask(self) -> Path:
        return self.func("space-T1w_desc-brain_mask.nii.gz")

    @property
    def confounds(self) -> Path:
        return self.func("desc-confounds_timeseries.tsv")

    def mask(self, name: str) -> Path:
        return self.root / "masks" / f"{name}.nii.gz"

    @property
    def betas(self) -> Path:
        return self.root / "betas"

    @property
    def out(self) -> Path:
        return self.root / "out" / "prepared_sub-01.h5"


def _bids(s: Study, *extra: str, roi: tuple[str, ...] | None = None) -> list[str]:
    rois = roi if roi is not None else (f"signal={s.mask('signal')}", "rel=reliable:5")
    return ["prepare", "--source", "bids", "--root", str(s.bids), "--subject", "sub-01", "--task", TASK,
            "--space", "T1w", "--roi", *rois, "--out", str(s.out), *extra]


def _betas(s: Study, *extra: str, betas: str = "betas.nii.gz", trials: str = "trials.tsv",
           roi: tuple[str, ...] | None = None) -> list[str]:
    rois = roi if roi is not None else (f"signal={s.mask('signal')}",)
    return ["prepare", "--source", "betas", "--root", str(s.bids), "--subject", "01", "--betas",
            str(s.betas / betas), "--trials", str(s.betas / trials), "--roi", *rois, "--out", str(s.out), *extra]


def _ok(argv: list[str]) -> None:
    assert main(["--no-progress", *argv]) == 0, argv


def _write_betas(study: Study) -> None:
    """``betas/``: a 4D NIfTI of one volume per trial, the same as .npy + brain mask, and the trials table."""
    events = sorted(study.bids.glob("sub-01/ses-*/func/*_events.tsv"))
    rows = []
    for path in events:
        table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
        ses = path.name.split("_ses-")[1].split("_")[0]
        run = path.name.split("_run-")[1].split("_")[0]
        rows += [(stim, ses, run) for stim in table["stim_file"] if stim != "n/a"]
    study.betas.mkdir()
    pd.DataFrame(rows, columns=["stim_file", "session", "run"]).to_csv(study.betas / "trials.tsv", sep="\t",
                                                                       index=False)
    volume = np.random.default_rng(3).normal(1.0, 1.0, (*SHAPE, len(rows))).astype(np.float32)
    nib.save(nib.Nifti1Image(volume, AFFINE), study.betas / "betas.nii.gz")
    brain = np.ones(SHAPE, dtype=bool)
    nib.save(nib.Nifti1Image(brain.astype(np.uint8), AFFINE), study.betas / "brain.nii.gz")
    np.save(study.betas / "betas.npy", volume[brain].T)  # (n_trials, n_voxels), argwhere order of the mask


@pytest.fixture(scope="module")
def valid_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small valid BIDS tree (+ masks, + precomputed betas) that prepares with exit 0; cases copy it."""
    root = tmp_path_factory.mktemp("valid")
    write_bids_tree(root)
    study = Study(root)
    _write_betas(study)
    done = tmp_path_factory.mktemp("prepared")
    _ok(_bids(study, "--out", str(done / "bids.h5")))
    _ok(_betas(study, "--out", str(done / "betas.h5")))
    _ok(_betas(study, "--mask", str(study.betas / "brain.nii.gz"), "--out", str(done / "npy.h5"), betas="betas.npy"))
    assert all((done / name).is_file() for name in ("bids.h5", "betas.h5", "npy.h5"))
    return root


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------ breakages
def _edit_tsv(path: Path, edit: Callable[[pd.DataFrame], pd.DataFrame]) -> None:
    table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    edit(table).to_csv(path, sep="\t", index=False)


def _set_cell(path: Path, row: int, column: str, value: str) -> None:
    def edit(table: pd.DataFrame) -> pd.DataFrame:
        table.loc[row, column] = value
        return table

    _edit_tsv(path, edit)


def _same_onset(s: Study) -> None:
    onset = pd.read_csv(s.events, sep="\t", dtype=str).loc[2, "onset"]
    _set_cell(s.events, 3, "onset", onset)


def _no_repeats(s: Study) -> None:
    """Every image shown once: each repeat replaced by an image not shown yet."""
    paths = sorted(s.bids.glob("sub-01/ses-*/func/*_events.tsv"))
    shown = [stim for p in paths for stim in pd.read_csv(p, sep="\t", dtype=str, keep_default_na=False)["stim_file"]
             if stim != "n/a"]
    unused = iter(sorted({f"images/{p.name}" for p in (s.bids / "stimuli" / "images").glob("*.png")} - set(shown)))
    seen: set[str] = set()
    for path in paths:
        def edit(table: pd.DataFrame) -> pd.DataFrame:
            for k, stim in enumerate(table["stim_file"]):
                if stim != "n/a":
                    table.loc[k, "stim_file"] = next(unused) if stim in seen else stim
                    seen.add(stim)
            return table

        _edit_tsv(path, edit)


def _split_column(s: Study) -> None:
    for path in s.bids.glob("sub-01/ses-*/func/*_events.tsv"):
        _edit_tsv(path, lambda t: t.assign(part=np.where(np.arange(len(t)) % 3 == 0, "test", "train")))
    _set_cell(s.events, 2, "part", "maybe")


def _brain_mask_grid(s: Study) -> None:
    data = np.asarray(nib.load(s.brain_mask).dataobj)
    nib.save(nib.Nifti1Image(np.concatenate([data, data[-1:]]), AFFINE), s.brain_mask)


def _nan_volume(s: Study) -> None:
    image = nib.load(s.bold)
    data = np.asarray(image.dataobj, dtype=np.float32)
    data[..., 5] = np.nan
    nib.save(nib.Nifti1Image(data, image.affine), s.bold)


def _write_mask(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE) -> None:
    nib.save(nib.Nifti1Image(data.astype(np.uint8), affine), path)


def _outside_brain(s: Study) -> None:
    mask = np.zeros(SHAPE)
    mask[0, 0, :] = 1  # the writer's brain mask leaves out row (0, 0, :)
    _write_mask(s.mask("outside"), mask)


def _nan_betas(s: Study) -> None:
    path = s.betas / "betas.nii.gz"
    data = np.asarray(nib.load(path).dataobj, dtype=np.float32)
    data[2, 1, 1, 4] = np.nan
    nib.save(nib.Nifti1Image(data, AFFINE), path)


def _glmsingle_other_class(s: Study) -> None:
    from collections import OrderedDict

    from brain2image.sources.betas.glmsingle import GLMSINGLE_STEM

    folder = s.betas / "glmsingle"
    folder.mkdir()
    np.save(folder / f"{GLMSINGLE_STEM}.npy", np.array(OrderedDict(betasmd=np.zeros((*SHAPE, 4))), dtype=object),
            allow_pickle=True)


# --------------------------------------------------------------------------------------- cases
OWN_DATA_BAD_INPUTS = [
    # BIDS: the run-by-run findings of prepare --check
    BadInput("bids: events without a BOLD run", _bids,
             lambda s: [str(s.events), "events without a preprocessed BOLD run", "run fMRIPrep"],
             lambda s: s.bold.unlink()),
    BadInput("bids: a BOLD run without events", _bids,
             lambda s: [str(s.bold), "BOLD run without events", f"{RUN_NAME}_events.tsv", "add it"],
             lambda s: s.events.unlink()),
    BadInput("bids: stim_file not in stimuli/", _bids, lambda s: [str(s.events), "images/not_there.png", "stimuli"],
             lambda s: _set_cell(s.events, 2, "stim_file", "images/not_there.png")),
    BadInput("bids: no TR anywhere (no sidecar)", _bids,
             lambda s: [str(s.func("bold.nii.gz", False, "01", 1)), "no RepetitionTime", f"task-{TASK}_bold.json",
                        "add it"],
             lambda s: (s.bids / f"task-{TASK}_bold.json").unlink()),
    BadInput("bids: brain mask and BOLD grids differ", _bids,
             lambda s: [str(s.brain_mask), "is not the BOLD's", "use the mask fMRIPrep wrote"], _brain_mask_grid),
    BadInput("bids: a confound column asked for but absent", _bids,
             lambda s: [str(s.confounds), "no confound column 'csf'", "--confounds"],
             lambda s: _edit_tsv(s.confounds, lambda t: t.drop(columns="csf"))),
    BadInput("bids: NaN volumes in the preprocessed BOLD", _bids,
             lambda s: [str(s.bold), "volume(s) hold NaN", "rerun fMRIPrep"], _nan_volume),
    BadInput("bids: two trials with one onset", _bids,
             lambda s: [str(s.events), "two trials or more share onset", "fix the onsets"], _same_onset),
    BadInput("bids: too few repeated images for a test set", _bids,
             lambda s: [f"{s.bids / 'sub-01'}: 0 test images", "show some images several times", "--split-column"],
             _no_repeats),
    # BIDS: dataset, subject, task, space
    BadInput("bids: no dataset_description.json in the root", _bids,
             lambda s: [str(s.bids), "dataset_description.json", "BIDS root"],
             lambda s: (s.bids / "dataset_description.json").unlink()),
    BadInput("bids: no dataset_description.json in the derivatives", _bids,
             lambda s: [str(s.fmriprep), "dataset_description.json", "--derivatives"],
             lambda s: (s.fmriprep / "dataset_description.json").unlink()),
    BadInput("bids: unknown subject", lambda s: _bids(s)[:6] + ["sub-07"] + _bids(s)[7:],
             lambda s: ['subject = "sub-07"', "--subject", "subjects present: sub-01"]),
    BadInput("bids: unknown task", lambda s: _bids(s)[:8] + ["rest"] + _bids(s)[9:],
             lambda s: ["task = 'rest'", "--task", "tasks present: images"]),
    BadInput("bids: space with no preprocessed BOLD", lambda s: _bids(s)[:10] + ["MNI152NLin2009cAsym"] + _bids(s)[11:],
             lambda s: ["events.tsv", "events without a preprocessed BOLD run", "--space"]),
    # BIDS: ROIs
    BadInput("bids: ROI mask file missing", lambda s: _bids(s, roi=(f"early={s.mask('none')}",)),
             lambda s: [str(s.mask("none")), "does not exist"]),
    BadInput("bids: ROI mask not 3D", lambda s: _bids(s, roi=(f"early={s.mask('four_d')}",)),
             lambda s: [str(s.mask("four_d")), "3D"],
             lambda s: _write_mask(s.mask("four_d"), np.ones((*SHAPE, 2)))),
    BadInput("bids: ROI mask outside the brain", lambda s: _bids(s, roi=(f"early={s.mask('outside')}",)),
             lambda s: [str(s.mask("outside")), "no voxel inside the runs' brain masks", "--space"], _outside_brain),
    BadInput("bids: --roi not NAME=MASK", lambda s: _bids(s, roi=("early",)), lambda s: ["early", "NAME=MASK"]),
    BadInput("bids: reliable:0", lambda s: _bids(s, roi=("rel=reliable:0",)),
             lambda s: ["[source] roi (--roi)", "'rel' = 'reliable:0'", "NAME=reliable:N"]),
    # BIDS: events and confounds tables
    BadInput("bids: events without the onset column", _bids, lambda s: [str(s.events), "no column 'onset'"],
             lambda s: _edit_tsv(s.events, lambda t: t.drop(columns="onset"))),
    BadInput("bids: an onset that is not a number", _bids, lambda s: [str(s.events), "onset", "soon"],
             lambda s: _set_cell(s.events, 2, "onset", "soon")),
    BadInput("bids: a split value other than train/test", lambda s: _bids(s, "--split-column", "part"),
             lambda s: [str(s.events), "'maybe'", "expected 'train' or 'test'"], _split_column),
    BadInput("bids: confounds with the wrong row count", _bids,
             lambda s: [str(s.confounds), "one row per volume"],
             lambda s: _edit_tsv(s.confounds, lambda t: t.iloc[:-1])),
    # BIDS: keys of other kinds
    BadInput("bids: an NSD-only [prepare] key", lambda s: _bids(s, "--rois", "streams:early"),
             lambda s: ["[prepare] rois", "NSD-only", "--roi NAME=MASK"]),
    BadInput("bids: a [source] key of the betas kind", lambda s: _bids(s, "--betas", str(s.betas / "betas.npy")),
             lambda s: ["[source] betas", "bids"]),
    # precomputed betas
    BadInput("betas: trials count not the betas'", _betas,
             lambda s: [str(s.betas / "trials.tsv"), "trials but", "one trial row per beta"],
             lambda s: _edit_tsv(s.betas / "trials.tsv", lambda t: t.iloc[:-1])),
    BadInput("betas: betas file missing", lambda s: _betas(s, betas="absent.nii.gz"),
             lambda s: [str(s.betas / "absent.nii.gz"), "not found", "--betas"]),
    BadInput("betas: trials table without a session column", _betas,
             lambda s: [str(s.betas / "trials.tsv"), "no column 'session'"],
             lambda s: _edit_tsv(s.betas / "trials.tsv", lambda t: t.drop(columns="session"))),
    BadInput("betas: .npy without --mask and a mask ROI", lambda s: _betas(s, betas="betas.npy"),
             lambda s: ["signal", "[source] mask"]),
    BadInput("betas: mask voxel count not the array's columns",
             lambda s: _betas(s, "--mask", str(s.mask("signal")), betas="betas.npy"),
             lambda s: [str(s.mask("signal")), "columns"]),
    BadInput("betas: GLMsingle pickle of another class", lambda s: _betas(s, betas="glmsingle"),
             lambda s: ["TYPED_FITHRF_GLMDENOISE_RR.npy", "collections.OrderedDict", "not a numpy array class"],
             _glmsingle_other_class),
    BadInput("betas: NaN betas", _betas, lambda s: [str(s.betas / "betas.nii.gz"), "NaN"], _nan_betas),
]


@pytest.mark.parametrize("case", OWN_DATA_BAD_INPUTS, ids=[case.name for case in OWN_DATA_BAD_INPUTS])
def test_a_bad_input_of_own_data_is_one_line_exit_2_and_nothing_written(case, valid_study, tmp_path, capsys):
    study = Study(tmp_path / "case")
    shutil.copytree(valid_study, study.root)
    case.breakage(study)
    argv = case.argv(study)
    capsys.readouterr()
    before = _snapshot(study.root)
    try:
        status = main(["--no-progress", *argv])
    except SystemExit as usage_error:  # argparse's one-line usage errors (OneLineParser)
        status = usage_error.code
    err = one_error_line(capsys, "prepare")
    assert status == 2, (argv, err)
    for words in case.expected(study):
        assert words in err, (words, err)
    after = _snapshot(study.root)
    assert after == before, sorted(set(after.items()) ^ set(before.items()))
    assert not study.out.exists()
    assert not [p for p in study.root.rglob("*") if ".tmp" in p.name or "partial" in p.name]


def test_the_table_has_at_least_twenty_four_distinct_cases():
    assert len({case.name for case in OWN_DATA_BAD_INPUTS}) == len(OWN_DATA_BAD_INPUTS) >= 24


def test_check_lists_several_problems_one_line_each(valid_study, tmp_path, capsys):
    study = Study(tmp_path / "case")
    shutil.copytree(valid_study, study.root)
    (study.bids / f"task-{TASK}_bold.json").unlink()
    _set_cell(study.func("events.tsv", False, "01", 1), 2, "stim_file", "images/not_there.png")
    _edit_tsv(study.confounds, lambda t: t.drop(columns="csf"))
    _brain_mask_grid(Study(study.root))
    capsys.readouterr()
    before = _snapshot(study.root)
    status = main(["--no-progress", *_bids(study)[:-2], "--check"])  # no --out
    out, err = capsys.readouterr()
    assert status == 1, err
    assert "sub-01" in out and "problem(s)" in out and "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 7 and all(line.startswith(str(study.bids)) for line in lines), lines  # 4 runs without TR
    assert f"{len(lines)} problem(s)" in out and all(line in out for line in lines)
    expected = {"no RepetitionTime": f"{RUN_NAME}_bold.nii.gz", "not_there.png": str(
        study.func("events.tsv", False, "01", 1)), "no confound column 'csf'": str(study.confounds),
        "is not the BOLD's": str(study.brain_mask)}
    for words, path in expected.items():
        assert any(words in line and path in line for line in lines), (words, lines)
    assert _snapshot(study.root) == before
