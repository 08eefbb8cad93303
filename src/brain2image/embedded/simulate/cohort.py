"""What differs between the subjects of a simulated study, each drawn from its own seed.

As in NSD, every subject sees the same stimuli (the 73k brick and captions are shared) and the
same ``masterordering``; each subject has its own row of ``subjectim`` (the shared images first,
sorted, then the subject's own order of the other images), its own anatomy (ROI sizes), voxel
tunings, noise level (ncsnr), session noise and behaviour.

Subject 1 is drawn exactly as a one-subject study draws it (from the study seed's streams and the
study's ROI sizes and ncsnr), so ``n_subjects=1`` writes the same files as before. Subject ``k`` ≥ 2
draws everything from ``SeedSequence([seed, k])``: its ROI sizes are the study's, each scaled by a
factor in [:data:`ROI_SCALE_RANGE`], its ncsnr the study's times a factor in [:data:`NCSNR_SCALE_RANGE`].
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ...errors import InvalidArgumentError

__all__ = ["MAX_SUBJECTS", "NCSNR_SCALE_RANGE", "ROI_SCALE_RANGE", "SubjectDraw", "check_subject_count",
           "first_subject", "other_subject",
           "subject_images", "truth_file_name"]

#: NSD has 8 subjects.
MAX_SUBJECTS = 8
#: Range of the factor on each ROI's size of subjects 2 and later (smaller ROIs always fit the brain).
ROI_SCALE_RANGE = (0.6, 1.0)
#: Range of the factor on the target ncsnr of subjects 2 and later.
NCSNR_SCALE_RANGE = (0.6, 1.4)


@dataclass(frozen=True)
class SubjectDraw:
    """The seeds and settings of one simulated subject.

    Attributes
    ----------
    number : int
        NSD subject number (``subjXX``).
    roi_sizes : dict of str to int
        Voxels per ``streams`` ROI.
    ncsnr : float
        Target median single-trial ncsnr of the ROI voxels.
    anatomy, tuning, noise, behaviour : numpy.random.SeedSequence
        Seeds of the anatomy, the voxel tunings, the betas' noise and the simulated behaviour.
    image_order : ndarray of int64 or None
        Permutation of the non-shared images of ``subjectim`` (None: the design's own order).
    """

    number: int
    roi_sizes: dict[str, int]
    ncsnr: float
    anatomy: np.random.SeedSequence
    tuning: np.random.SeedSequence
    noise: np.random.SeedSequence
    behaviour: np.random.SeedSequence
    image_order: np.ndarray | None = None


def first_subject(roi_sizes: Mapping[str, int], ncsnr: float, *, anatomy: np.random.SeedSequence,
                  tuning: np.random.SeedSequence, noise: np.random.SeedSequence,
                  behaviour: np.random.SeedSequence) -> SubjectDraw:
    """Subject 1: the study's ROI sizes and ncsnr, the study seed's streams, the design's image order."""
    return SubjectDraw(1, dict(roi_sizes), ncsnr, anatomy, tuning, noise, behaviour)


def other_subject(number: int, seed: int, roi_sizes: Mapping[str, int], ncsnr: float,
                  n_other_images: int) -> SubjectDraw:
    """Subject ``number`` ≥ 2, drawn from ``SeedSequence([seed, number])``.

    Parameters
    ----------
    number : int
        2..8.
    seed : int
        The study's seed.
    roi_sizes, ncsnr
        The study's (subject 1's) ROI sizes and target ncsnr, which this subject's scale.
    n_other_images : int
        Non-shared images of ``subjectim`` (the subject's order of them is drawn here).
    """
    anatomy, tuning, noise, behaviour, variation = np.random.SeedSequence([int(seed), int(number)]).spawn(5)
    rng = np.random.default_rng(variation)
    sizes = {name: max(1, round(size * rng.uniform(*ROI_SCALE_RANGE))) for name, size in roi_sizes.items()}
    return SubjectDraw(int(number), sizes, float(ncsnr * rng.uniform(*NCSNR_SCALE_RANGE)), anatomy, tuning,
                       noise, behaviour, image_order=rng.permutation(n_other_images))


def check_subject_count(n_subjects: int) -> None:
    """Refuse a number of subjects outside 1..8.

    Raises
    ------
    InvalidArgumentError
    """
    if isinstance(n_subjects, bool) or not isinstance(n_subjects, (int, np.integer)) \
            or not 1 <= n_subjects <= MAX_SUBJECTS:
        raise InvalidArgumentError(f"n_subjects = {n_subjects!r}: expected an integer in [1, {MAX_SUBJECTS}] "
                                   "(NSD has 8 subjects)")


def subject_images(subjectim: np.ndarray, n_shared: int, image_order: np.ndarray | None) -> np.ndarray:
    """A subject's row of ``subjectim``: the shared images (sorted) first, then the others in its order."""
    if image_order is None:
        return subjectim
    return np.concatenate([subjectim[:n_shared], subjectim[n_shared:][image_order]])


def truth_file_name(number: int) -> str:
    """The ground truth of a subject: ``simulation_truth.h5`` (subject 1), ``simulation_truth_subjXX.h5``."""
    return "simulation_truth.h5" if number == 1 else f"simulation_truth_subj{int(number):02d}.h5"
