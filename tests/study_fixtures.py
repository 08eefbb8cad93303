"""Setup shared by the end-to-end test modules: a small simulated study with a tiny model, one-line CLI errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from brain2image.embedded.simulate.study import SimulatedStudy, simulate_study

__all__ = ["SMALL_ROIS", "SMALL_STUDY", "simulate_small_study", "tiny_study", "one_error_line"]

#: ROI sizes (voxels) of the small study.
SMALL_ROIS = {"early": 120, "ventral": 120, "midventral": 10, "lateral": 10}
#: :func:`~brain2image.embedded.simulate.study.simulate_study` settings of the small study.
SMALL_STUDY: dict[str, Any] = {"n_images": 300, "n_shared": 8, "n_sessions": 1, "volume_shape": (12, 14, 10),
                               "roi_sizes": SMALL_ROIS, "progress": False}


def simulate_small_study(out_dir: Path, **overrides: Any) -> SimulatedStudy:
    """``simulate_study(out_dir, ...)`` with :data:`SMALL_STUDY`'s settings, ``overrides`` replacing any of them."""
    return simulate_study(out_dir, **{**SMALL_STUDY, **overrides})


def tiny_study(root: Path, model: str = "tiny_model", **overrides: Any) -> tuple[SimulatedStudy, Path]:
    """The small study in ``root/study`` and a tiny random BERT LDM (seed 0) saved in ``root/<model>``.

    Returns
    -------
    (SimulatedStudy, Path)
        The simulated study and the model folder.
    """
    # Imported here: ldm_dummy imports torch, which the modules that only need one_error_line do without.
    from ldm_dummy import save_tiny_ldm, tiny_ldm

    study = simulate_small_study(root / "study", **overrides)
    return study, save_tiny_ldm(tiny_ldm(text="bert"), root / model)


def one_error_line(capsys, command: str = "run") -> str:
    """What the command wrote to stderr, checked to be one line ``brain2image <command>: error: ...``."""
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"brain2image {command}: error: "), err
    return err
