"""Precomputed single-trial betas as a data source: :class:`BetasSource` (``[source] kind = "betas"``).

One subject per source: the betas (``[source] betas``: a 4D NIfTI, a ``.npy`` / ``.h5`` array or a
GLMsingle output folder), their trials (``[source] trials``: a TSV or a folder of BIDS events),
the images under ``<root>/stimuli``, ROIs from ``[source] roi`` (NIfTI masks or ``reliable:N``)
placed by ``[source] mask`` for arrays. The subject label is the run config's ``subject``, any
label (it names the run's folders; in an events folder holding several subjects it picks the
subject's files). Registered as ``betas`` in the ``brain2image.sources`` entry-point group.
"""

from __future__ import annotations

import numbers
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ...errors import MissingFileError
from ..base import SubjectWords, numeric_label, refuse_source_keys
from ..nsd.check import CheckReport
from ..single_trial import write_single_trial_prepared
from ..stimulus_folder import FolderStimuli
from .check import check_betas
from .study import BetasSettings, Study, open_stimuli, open_study, select_sessions, trial_table
from .voxels import VoxelPlan, plan_voxels

if TYPE_CHECKING:
    from ...config import PrepareConfig, SourceConfig

__all__ = ["BetasSource"]


class BetasSource:
    """Precomputed single-trial betas of one subject, with their trials and stimuli.

    Parameters
    ----------
    config : SourceConfig
        ``root`` (holds ``stimuli/``), ``betas``, ``trials``, optional ``mask``, ``roi``,
        ``stimulus_column``, ``split_column``, ``identity_column``, ``image_size``, ``task`` (events folders), ``space``
        (recorded in the prepared file; default ``"betas"``).
    """

    kind = "betas"
    dataset = "betas"
    subject_words = SubjectWords(one="a subject label (any: the betas are one subject's)", many="subject labels",
                                 example='["01"]')

    #: The ``[source]`` keys this kind reads besides ``kind`` and ``root`` (others are refused).
    KEYS = ("betas", "trials", "mask", "roi", "stimulus_column", "split_column", "identity_column", "image_size",
            "task", "space")

    def __init__(self, config: SourceConfig) -> None:
        refuse_source_keys(config, self.KEYS)
        self.config = config

    def _settings(self, subject: str | None = None) -> BetasSettings:
        return BetasSettings.of(self.config, subject)

    def subjects(self) -> list[str]:
        """None listed: the betas are one subject's, under the run config's subject label."""
        return []

    def subject_label(self, value: object) -> str | None:
        """Any integer or non-empty label, as a string (``"sub-"`` kept as given)."""
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return str(int(value))
        if isinstance(value, str) and value.strip():
            return value.strip()
        return None

    def require_root(self) -> None:
        """``root/stimuli``, ``betas`` and ``trials`` must exist.

        Raises
        ------
        MissingFileError
        InvalidArgumentError
            A key is not set.
        """
        settings = self._settings()
        if not (settings.root / "stimuli").is_dir():
            raise MissingFileError(f"root = {str(settings.root)!r}: no stimuli/ folder in it; expected the folder "
                                   "holding stimuli/ (the images the trials name)")
        for key, path in (("betas", settings.betas), ("trials", settings.trials)):
            if not path.exists():
                raise MissingFileError(f"[source] {key} = {str(path)!r}: not found; set --{key} to an existing "
                                       "file or folder")

    def require_subject(self, subject: str, settings: PrepareConfig) -> None:
        """Any label is accepted (the betas are one subject's): checks the files only (:meth:`require_root`)."""
        self.require_root()

    def check(self, subject: str, settings: PrepareConfig, *, trials_per_session: int | None = None) -> CheckReport:
        """Every file and consistency a run needs (:func:`~.check.check_betas`); ``trials_per_session`` unused."""
        return check_betas(self._settings(subject), _events_subject(subject), settings.sessions)

    def prepare(self, subject: str, settings: PrepareConfig, out: Path, *, progress: bool = True,
                trials_per_session: int | None = None) -> Path:
        """Write ``subject``'s prepared file (:func:`~brain2image.sources.single_trial.write_single_trial_prepared`).

        ``trials_per_session`` is unused (the trials table gives the sessions).
        """
        config = self._settings(subject)
        where = f"betas {config.betas}"
        study = open_study(config, _events_subject(subject))
        keep = select_sessions(study.trials, settings.sessions, str(config.trials))
        plan = plan_voxels(study.betas, config.roi_specs(), config.mask, where)
        return write_single_trial_prepared(
            out, trials=trial_table(study.trials, study.image_ids, keep, config.identity_column or "", study.stimuli),
            read_session=lambda session: study.betas.read(study.rows_of(session), plan.columns),
            positions=plan.positions, rois=plan.rois, attrs=_attrs(subject, study, plan),
            zscore_sessions=settings.zscore_sessions, progress=progress, where=where,
            content_keys=study.stimuli.content_keys)

    def stimuli(self) -> FolderStimuli:
        """``<root>/stimuli`` (images resized to ``image_size``; captions from ``captions.tsv``)."""
        return open_stimuli(self._settings())


def _events_subject(subject: str) -> str:
    """The BIDS label of a run's subject (``"sub-01"`` -> ``"01"``), to pick a subject's events files."""
    return str(subject).removeprefix("sub-")


def _attrs(subject: str, study: Study, plan: VoxelPlan) -> dict[str, Any]:
    config = study.settings
    return {"subject": numeric_label(str(subject)), "space": config.space or "betas", "source": "betas",
            "volume_shape": np.asarray(plan.volume_shape, dtype=np.int64), "affine": plan.affine,
            **study.stimuli.identity(), "betas": str(config.betas), "trials": str(config.trials),
            "mask": str(config.mask) if config.mask else "", "beta_format": _format(study.betas.path),
            "identity_column": config.identity_column or "",
            "positions_placed": plan.placed, "scale": "as stored"}


def _format(path: Path) -> str:
    name = path.name.lower()
    return "glmsingle" if "typed_fithrf" in name else ("nifti" if ".nii" in name else name.rsplit(".", 1)[-1])
