"""A data source generated in memory (``[source] kind = "toy"``): the worked example of docs/extending.md.

40 images of 32 x 32 pixels, each a coloured shape on a grey background with two captions naming
it; two subjects, ``sub-01`` and ``sub-02``, with two ROIs: ``early`` voxels respond to the pixels,
``ventral`` voxels to the shape and colour the captions name. Images 0..7 are the test images
(each seen 3 times), the others are seen twice each. Everything follows from :data:`SEED`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from functools import cache
from pathlib import Path

import numpy as np

from brain2image.config import PrepareConfig, SourceConfig
from brain2image.errors import DataFormatError, MissingFileError
from brain2image.formats.prepared import PreparedRoi, PreparedWriter, TrialIndex
from brain2image.sources import SubjectWords

__all__ = ["ToySource", "ToyStimuli", "ToyCheck", "SEED", "SUBJECTS", "N_IMAGES", "TEST_IDS"]

SEED = 0
SUBJECTS = ("sub-01", "sub-02")
N_IMAGES, SIZE = 40, 32
TEST_IDS = np.arange(8)
SHAPES = ("square", "disc", "bar", "cross")
COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 70, 220), "yellow": (230, 210, 40)}
N_VOXELS = {"early": 30, "ventral": 30}


def _draw(rng: np.random.Generator, shape: str, colour: tuple[int, int, int]) -> np.ndarray:
    """One image: ``shape`` in ``colour`` at a random place on a noisy grey background, (SIZE, SIZE, 3) uint8."""
    image = rng.normal(128, 12, (SIZE, SIZE, 1)).clip(0, 255).repeat(3, axis=2)
    y, x = np.mgrid[:SIZE, :SIZE]
    cy, cx = rng.integers(10, SIZE - 10, 2)
    mask = {"square": (abs(y - cy) < 7) & (abs(x - cx) < 7),
            "disc": (y - cy) ** 2 + (x - cx) ** 2 < 64,
            "bar": abs(y - cy) < 3,
            "cross": (abs(y - cy) < 3) | (abs(x - cx) < 3)}[shape]
    image[mask] = colour
    return image.astype(np.uint8)


@cache
def _study() -> tuple[np.ndarray, tuple[tuple[str, ...], ...], np.ndarray]:
    """(images (N_IMAGES, SIZE, SIZE, 3) uint8, two captions per image, category one-hots (N_IMAGES, 8))."""
    rng = np.random.default_rng(SEED)
    images, captions, categories = [], [], np.zeros((N_IMAGES, len(SHAPES) + len(COLOURS)), np.float32)
    for i in range(N_IMAGES):
        shape, colour = SHAPES[i % len(SHAPES)], list(COLOURS)[(i // len(SHAPES)) % len(COLOURS)]
        images.append(_draw(rng, shape, COLOURS[colour]))
        captions.append((f"a {colour} {shape}", f"a {shape} painted {colour} on grey"))
        categories[i, [SHAPES.index(shape), len(SHAPES) + list(COLOURS).index(colour)]] = 1
    return np.stack(images), tuple(captions), categories


class ToyStimuli:
    """The toy study's images and captions, by id 0..39 (a :class:`~brain2image.sources.StimulusSource`)."""

    def ids(self) -> np.ndarray:
        return np.arange(N_IMAGES, dtype=np.int64)

    def check(self, ids: Sequence[int] | np.ndarray) -> None:
        bad = [int(i) for i in np.asarray(ids).reshape(-1) if not 0 <= i < N_IMAGES]
        if bad:
            raise DataFormatError(f"toy study: no image {bad[0]}; expected ids 0..{N_IMAGES - 1}")

    def images(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        self.check(ids)
        return _study()[0][np.asarray(ids, dtype=np.int64)]

    def batches(self, ids: Sequence[int] | np.ndarray, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        ids = np.unique(np.asarray(ids, dtype=np.int64))
        for start in range(0, len(ids), batch_size):
            yield ids[start:start + batch_size], self.images(ids[start:start + batch_size])

    def captions(self, ids: Sequence[int] | np.ndarray) -> list[list[str]]:
        self.check(ids)
        return [list(_study()[1][i]) for i in np.asarray(ids, dtype=np.int64)]

    def identity(self) -> dict[str, str]:
        """The origin, and a fingerprint of the images and captions (files of another study are refused)."""
        images, captions, _ = _study()
        digest = hashlib.sha256(images.tobytes() + repr(captions).encode()).hexdigest()[:16]
        return {**self.origin(), "stimuli_identity": f"toy:{digest}"}

    def origin(self) -> dict[str, str]:
        return {"toy_seed": str(SEED)}

    def is_simulated(self) -> bool:
        return True

    def describe(self) -> str:
        return f"the toy study (seed {SEED})"


class ToyCheck:
    """What :meth:`ToySource.check` finds: nothing is ever missing from a study in memory."""

    ok = True

    def problem_lines(self) -> list[str]:
        return []

    def format_table(self) -> str:
        return f"toy study: {N_IMAGES} images, subjects {', '.join(SUBJECTS)} (in memory: nothing to read)"


class ToySource:
    """The toy study as a :class:`~brain2image.sources.DataSource`; ``[source] root`` is not used."""

    kind = "toy"
    dataset = "toy"
    subject_words = SubjectWords(one='a toy subject "sub-01" or "sub-02"', many='toy subjects "sub-01", "sub-02"',
                                 example='["sub-01", "sub-02"]')

    def __init__(self, config: SourceConfig) -> None:
        self.config = config

    def subjects(self) -> list[str]:
        return list(SUBJECTS)

    def subject_label(self, value: object) -> str | None:
        return value if isinstance(value, str) and value in SUBJECTS else None

    def require_root(self) -> None:
        """Nothing to check: the study is generated in memory."""

    def require_subject(self, subject: str, settings: PrepareConfig) -> None:
        if subject not in SUBJECTS:
            raise MissingFileError(f"subjects: {subject!r} is not in the toy study; expected one of {list(SUBJECTS)}")

    def check(self, subject: str, settings: PrepareConfig, *, trials_per_session: int | None = None) -> ToyCheck:
        return ToyCheck()

    def stimuli(self) -> ToyStimuli:
        return ToyStimuli()

    def prepare(self, subject: str, settings: PrepareConfig, out: Path, *, progress: bool = True,
                trials_per_session: int | None = None) -> Path:
        """Simulate ``subject``'s trials and write them through the prepared file's own writer."""
        self.require_subject(subject, settings)
        train_ids, test_trial_ids, voxels = _trials(SUBJECTS.index(subject))
        rois, start = [], 0
        for key, n in N_VOXELS.items():  # each ROI: its columns of the voxel rows, and where its voxels are
            ijk = np.stack([np.arange(n) % 6, np.arange(n) // 6, np.full(n, list(N_VOXELS).index(key))], axis=1)
            rois.append(PreparedRoi(key=key, atlas="toy", label=key, label_values=np.zeros(0, np.int64),
                                    columns=np.arange(start, start + n), positions={"ijk": ijk}))
            start += n
        attrs = {"subject": subject, "space": "toy", "rois": list(N_VOXELS), "volume_shape": [6, 6, 2],
                 "affine": np.eye(4), **ToyStimuli().identity()}  # identity: the stimuli_identity of the study
        with PreparedWriter(out, attrs, _index(train_ids), _index(test_trial_ids), rois) as writer:
            writer.write_session(voxels[:len(train_ids)], voxels[len(train_ids):])  # training rows, test trials
            means = voxels[len(train_ids):].reshape(len(TEST_IDS), 3, -1).mean(axis=1)
            writer.write_test(TEST_IDS, np.full(len(TEST_IDS), 3), {roi.key: means[:, roi.columns] for roi in rois})
        return Path(out)


def _index(ids: np.ndarray) -> TrialIndex:
    """One session, trials numbered from 1 in the order written."""
    return TrialIndex(ids, np.ones(len(ids), np.int16), np.arange(1, len(ids) + 1, dtype=np.int16))


def _trials(subject_index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A subject's trials: training ids (shuffled), test ids (3 repeats each, grouped) and their voxels.

    Returns
    -------
    train_ids : (n_train,) ; test_trial_ids : (3 * len(TEST_IDS),)
    voxels : (n_train + n_test_trials, early + ventral voxels) float32, the training rows first
    """
    images, _, categories = _study()
    rng = np.random.default_rng([SEED, subject_index])
    train_ids = rng.permutation(np.repeat(np.arange(len(TEST_IDS), N_IMAGES), 2))
    test_trial_ids = np.repeat(TEST_IDS, 3)
    ids = np.concatenate([train_ids, test_trial_ids])
    grey = images.mean(axis=3).reshape(N_IMAGES, 8, 4, 8, 4).mean(axis=(2, 4)).reshape(N_IMAGES, 64)
    early = (grey - grey.mean(axis=0)) / grey.std(axis=0) @ rng.normal(0, 1 / 8, (64, N_VOXELS["early"]))
    ventral = categories @ rng.normal(0, 1, (categories.shape[1], N_VOXELS["ventral"]))
    signal = np.concatenate([early, ventral], axis=1)[ids]
    return train_ids, test_trial_ids, (signal + rng.normal(0, 0.5, signal.shape)).astype(np.float32)
