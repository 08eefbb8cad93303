"""The run folder: where every output of ``brain2image run`` / ``demo`` lives.

::

    run_config.json, model.json, timings.json    the run's settings, model fingerprint, stage times
    prepared/subjXX.h5                           prepare          (formats.prepared)
    features/nsd_<model>_{z,c}.h5                features         (formats.feature_store)
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

__all__ = ["RunLayout", "RUN_FILES", "FEATURE_DATASET"]

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

#: Dataset name of a run's feature stores.
FEATURE_DATASET = "nsd"


@dataclass(frozen=True)
class RunLayout:
    """Paths of one run folder.

    Parameters
    ----------
    root : Path
        The run folder.
    subject : int
        NSD subject (1..8).
    model : str
        Model name as given in the config (it names the feature stores).
    """

    root: Path
    subject: int = 1
    model: str = "bundled"

    @classmethod
    def of(cls, root: str | os.PathLike, subject: int = 1, model: str = "bundled") -> RunLayout:
        """A layout rooted at ``root``."""
        return cls(Path(root), int(subject), str(model))

    def file(self, key: str) -> Path:
        """A file or folder of :data:`RUN_FILES` (``metrics``, ``recon``, ...)."""
        return self.root / RUN_FILES[key]

    @property
    def subject_tag(self) -> str:
        """``subjXX``."""
        return f"subj{self.subject:02d}"

    @property
    def prepared(self) -> Path:
        """``prepared/subjXX.h5``."""
        return self.file("prepared") / f"{self.subject_tag}.h5"

    def feature_store(self, feature: str) -> Path:
        """``features/nsd_<model>_<feature>.h5``."""
        return feature_store_path(self.file("features"), FEATURE_DATASET, self.model, feature)

    def decoder(self, target: str, roi: str) -> Path:
        """``decoders/subjXX_<target>_<roi>.h5``."""
        return self.file("decoders") / DecoderFile.filename(self.subject, target, roi)
