"""The run folder: where every output of ``brain2image run`` / ``demo`` lives.

::

    run_config.json, model.json, timings.json    the run's settings, model fingerprint, stage times
    stages/<stage>.json                          settings each finished stage computed with (stages.recorded_settings)
    prepared/subjXX.h5                           prepare          (formats.prepared)
    features/<dataset>_<model>_<target>.h5       features         (formats.feature_store; NSD: nsd_...)
    features_zc/...                              encoding features (z_c, U-Net)
    decoders/subjXX_<target>_<roi>.h5            fit              (formats.decoder_file)
    recon/                                       reconstruct      (formats.recon_index)
    evaluation.json                              evaluate
    encoding/                                    encode
    metrics.json, report.html                    the run's summary
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .decoder_file import DecoderFile
from .feature_store import feature_store_path

__all__ = ["RunLayout", "RUN_FILES", "DEFAULT_DATASET", "subject_tag"]

#: Files and folders of a run folder, relative to it.
RUN_FILES = {
    "metrics": "metrics.json",
    "evaluation": "evaluation.json",
    "brain_correlation": "brain_correlation.json",
    "report": "report.html",
    "timings": "timings.json",
    "config": "run_config.json",
    "model": "model.json",
    "recon": "recon",
    "encoding": "encoding",
    "prepared": "prepared",
    "features": "features",
    "features_zc": "features_zc",
    "decoders": "decoders",
}

#: Dataset name of a layout made without one: the default source's (``[source] kind = "nsd"``). A run's
#: layout takes its data source's (:attr:`brain2image.sources.DataSource.dataset`).
DEFAULT_DATASET = "nsd"


def subject_tag(subject: int | str) -> str:
    """A subject's name in the run's file and folder names: ``subjXX`` for a number, else the label itself."""
    return f"subj{subject:02d}" if isinstance(subject, int) else str(subject)


@dataclass(frozen=True)
class RunLayout:
    """Paths of one run folder.

    Parameters
    ----------
    root : Path
        The run folder.
    subject : int or str
        Subject label as the run config holds it (an int for NSD's 1..8).
    model : str
        Model name as given in the config (it names the feature stores).
    dataset : str
        The data source's dataset name (it names the feature stores).
    """

    root: Path
    subject: int | str = 1
    model: str = "bundled"
    dataset: str = DEFAULT_DATASET

    @classmethod
    def of(cls, root: str | os.PathLike, subject: int | str = 1, model: str = "bundled",
           dataset: str = DEFAULT_DATASET) -> RunLayout:
        """A layout rooted at ``root``."""
        label = subject if isinstance(subject, str) and not subject.isdigit() else int(subject)
        return cls(Path(root), label, str(model), dataset)

    def file(self, key: str) -> Path:
        """A file or folder of :data:`RUN_FILES` (``metrics``, ``recon``, ...)."""
        return self.root / RUN_FILES[key]

    @property
    def subject_tag(self) -> str:
        """``subjXX`` (:func:`subject_tag`)."""
        return subject_tag(self.subject)

    @property
    def prepared(self) -> Path:
        """``prepared/subjXX.h5``."""
        return self.file("prepared") / f"{self.subject_tag}.h5"

    def feature_store(self, feature: str) -> Path:
        """``features/<dataset>_<model>_<feature>.h5``."""
        return feature_store_path(self.file("features"), self.dataset, self.model, feature)

    def decoder(self, target: str, roi: str) -> Path:
        """``decoders/subjXX_<target>_<roi>.h5``."""
        return self.file("decoders") / DecoderFile.filename(self.subject, target, roi)
