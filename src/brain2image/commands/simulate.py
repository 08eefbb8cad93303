"""``brain2image simulate``: write the embedded default data set (a simulated NSD tree or BIDS study)."""

from __future__ import annotations

import argparse
import logging

from ..errors import InvalidArgumentError
from ._common import add_command_parser, show_progress

__all__ = ["register", "run"]

logger = logging.getLogger(__name__)

#: Command-line option → :func:`~brain2image.embedded.simulate.study.simulate_study` argument.
_STUDY_OPTIONS = {
    "n_images": "n_images", "n_shared": "n_shared", "sessions": "n_sessions", "late_sessions": "late_sessions",
    "late_shared": "late_shared", "ncsnr": "ncsnr", "volume_shape": "volume_shape", "image_size": "image_size",
    "model_size": "model_size",
}
#: Command-line option → :func:`~brain2image.embedded.simulate.bids_study.simulate_bids_study` argument.
_BIDS_OPTIONS = {
    "n_images": "n_images", "n_test": "n_test", "sessions": "n_sessions", "runs": "runs_per_session",
    "trials_per_run": "trials_per_run", "train_repeats": "train_repeats", "ncsnr": "ncsnr",
    "volume_shape": "volume_shape", "image_size": "image_size", "tr": "tr",
}
#: Options of one format only (option → the format it belongs to).
_FORMAT_ONLY = {"n_shared": "nsd", "late_sessions": "nsd", "late_shared": "nsd", "model_size": "nsd",
                "nifti_betas": "nsd", "n_test": "bids", "runs": "bids", "trials_per_run": "bids", "tr": "bids",
                "train_repeats": "bids", "nsd_study": "bids"}


def _volume_shape(text: str) -> tuple[int, int, int]:
    try:
        shape = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        shape = ()
    if len(shape) != 3:
        raise argparse.ArgumentTypeError(f"expected XxYxZ (e.g. 24x30x20), got {text!r}")
    return shape


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``simulate`` subcommand."""
    parser = add_command_parser(
        subparsers, "simulate",
        help="simulate a subject viewing procedural scenes, written as an NSD tree or a BIDS study",
        description="Simulate a subject viewing procedural scenes and write an NSD tree "
        "(<out>/nsd), or with --format bids a BIDS + fMRIPrep study (<out>/bids), plus the ground truth "
        "(<out>/simulation_truth.h5). Options given explicitly "
        "override the preset's values; the defaults below hold without a preset.")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--format", choices=("nsd", "bids"), default="nsd",
                        help="nsd: an NSD tree (<out>/nsd); bids: an image experiment as raw BIDS + fMRIPrep-style "
                        "derivatives and ROI masks (<out>/bids), BOLD time series with the true single-trial "
                        "responses in <out>/simulation_truth.h5; its sizes default to the 'demo' preset "
                        "(1,850 images: 30 test images x 3, the others x 2; 6 sessions of 10 runs of about 62 trials)")
    parser.add_argument("--preset", choices=("demo", "nsd", "transfer"),
                        help="named study: 'nsd' is an NSD-size subject (40 sessions, 10,000 images, 425 px; "
                        "about 12 GB, see docs/simulation.md), 'demo' the demo's study, 'transfer' a study for "
                        "cross-subject transfer (2,200 images, 160 shared, 8 sessions, ncsnr 0.2; use it with "
                        "--subjects 4)")
    parser.add_argument("--n-images", type=int,
                        help="size of the simulated 73k image space (default: 1250; bids: images, 1850)")
    parser.add_argument("--n-shared", type=int, help="shared test images, shown 3 times each (default: 50)")
    parser.add_argument("--sessions", type=int,
                        help="sessions of 750 trials (default: 4; bids: sessions of --runs runs, 6)")
    parser.add_argument("--late-sessions", type=int,
                        help="last sessions that hold the final repeats of --late-shared shared images (default: 0)")
    parser.add_argument("--late-shared", type=int,
                        help="shared images not fully seen before the late sessions (default: 0)")
    parser.add_argument("--ncsnr", type=float,
                        help="median single-trial ncsnr of the ROI voxels (default: 0.4; bids: 0.6)")
    parser.add_argument("--volume-shape", type=_volume_shape, help="functional volume XxYxZ (default: 24x30x20)")
    parser.add_argument("--image-size", type=int, help="stimulus side in pixels (default: 64)")
    parser.add_argument("--model-size", type=int,
                        help="side the simulated subject sees the stimuli at (default: the stimulus side)")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--subjects", type=int, default=1, metavar="N",
                        help="subjects subj01 … subjNN (1..8) sharing the stimuli; each has its own seed, "
                        "voxel tunings, ncsnr and ROI sizes, and subject k ≥ 2 its own "
                        "simulation_truth_subjXX.h5 (docs/simulation.md)")
    parser.add_argument("--nifti-betas", action="store_true", help="also write betas_sessionNN.nii.gz")
    _add_bids_options(parser)
    parser.set_defaults(func=run)


def _add_bids_options(parser: argparse.ArgumentParser) -> None:
    """The ``--format bids`` options."""
    group = parser.add_argument_group("--format bids")
    group.add_argument("--n-test", type=int, help="test images, shown 3 times each (bids; default: 30)")
    group.add_argument("--runs", type=int, help="runs per session (bids; default: 10)")
    group.add_argument("--trials-per-run", type=int, help="most trials per run (bids; default: 63)")
    group.add_argument("--tr", type=float, help="repetition time in seconds (bids; default: 2.0)")
    group.add_argument("--train-repeats", type=int,
                       help="presentations of each training image (bids; default: 2); above 1, "
                       "the split is the events' trial_split column ([source] split_column)")
    group.add_argument("--nsd-study", metavar="PATH",
                       help="show the images of this simulated NSD study (a folder `brain2image simulate` wrote: "
                       "nsd/, simulation_truth.h5): test images from its shared images, training images from the "
                       "others (seeded), their 0-based 73k ids in the events' nsd_id column ([source] "
                       "identity_column), for cross-subject transfer to its subjects (bids; default: new scenes)")


def _check_format_options(args: argparse.Namespace) -> None:
    """Refuse an option of the other format (one line)."""
    for option, owner in _FORMAT_ONLY.items():
        if owner != args.format and getattr(args, option) not in (None, False):
            flag = "--" + option.replace("_", "-")
            raise InvalidArgumentError(f"{flag} applies to --format {owner} only, not --format {args.format}; "
                                       f"drop it (see brain2image simulate --help)")
    if args.format == "bids" and args.preset in ("nsd", "transfer"):
        raise InvalidArgumentError(f"--preset {args.preset} applies to --format nsd only; --format bids has "
                                   "--preset demo (its default sizes)")


def _run_bids(args: argparse.Namespace) -> int:
    """``simulate --format bids``."""
    from ..embedded.simulate.bids_study import simulate_bids_study

    options = {argument: getattr(args, option) for option, argument in _BIDS_OPTIONS.items()}
    study = simulate_bids_study(args.out, preset=args.preset, seed=args.seed, n_subjects=args.subjects,
                                nsd_study=args.nsd_study, progress=show_progress(args), **options)
    logger.info("BIDS study: %s; ground truth: %s", study.bids_root, study.truth_paths[0])
    print(f"BIDS dataset: {study.bids_root}\nfMRIPrep derivatives: {study.derivatives}\n"
          f"ROI masks: {study.rois_dir}\nground truth: {study.truth_paths[0]}")
    for subject, path in zip(study.subjects[1:], study.truth_paths[1:]):
        print(f"ground truth of sub-{subject}: {path}")
    if study.nsd_study is not None:
        print(f"images of the NSD study {study.nsd_study} (events column nsd_id: 0-based 73k id)")
    return 0


def run(args: argparse.Namespace) -> int:
    """Run ``brain2image simulate``."""
    from ..embedded.simulate.study import simulate_study

    _check_format_options(args)
    if args.format == "bids":
        return _run_bids(args)

    options = {argument: getattr(args, option) for option, argument in _STUDY_OPTIONS.items()}
    study = simulate_study(args.out, preset=args.preset, nifti_betas=args.nifti_betas, seed=args.seed,
                           n_subjects=args.subjects, progress=show_progress(args), **options)
    logger.info("NSD tree: %s; ground truth: %s", study.nsd_root, study.truth_path)
    print(f"NSD tree: {study.nsd_root}\nground truth: {study.truth_path}")
    for subject, path in zip(study.subjects[1:], study.truth_paths[1:]):
        print(f"ground truth of subject {subject}: {path}")
    return 0
