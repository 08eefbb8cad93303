"""``--no-progress`` silences the libraries too: no loading bars, no deprecation warnings."""

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
from ldm_dummy import one_torch_thread, save_tiny_ldm, tiny_ldm, write_fake_stimuli  # noqa: F401
from prepared_writer import write_prepared

from brain2image.commands._common import library_noise
from brain2image.ldm.loading import load_ldm

#: What the libraries print when left alone: tqdm bars and diffusers' deprecation of ``torch_dtype``.
NOISE = ("Loading weights", "Loading pipeline components", "it/s]", "FutureWarning")


def _bar_states():
    import diffusers.utils.logging as diffusers_logging
    import transformers.utils.logging as transformers_logging
    from huggingface_hub import utils as hub

    return (transformers_logging.is_progress_bar_enabled(), diffusers_logging.is_progress_bar_enabled(),
            not hub.are_progress_bars_disabled())


def test_library_noise_is_off_inside_the_block_only(tmp_path):
    folder = save_tiny_ldm(tiny_ldm(), tmp_path / "tiny")
    before = _bar_states()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        filters = list(warnings.filters)
        with library_noise(progress=True):
            assert _bar_states() == before
        with library_noise(progress=False):
            assert _bar_states() == (False, False, False)
            load_ldm(folder)
            _library_deprecation()
        assert _bar_states() == before and warnings.filters == filters
        assert not [w for w in caught if issubclass(w.category, (FutureWarning, DeprecationWarning))]
        # The same deprecation outside the block is shown.
        _library_deprecation()
        assert any(issubclass(w.category, FutureWarning) and "deprecated" in str(w.message) for w in caught)


def _library_deprecation():
    """A FutureWarning as diffusers issues them (brain2image itself no longer triggers one)."""
    warnings.warn_explicit("`x` is deprecated", FutureWarning, "pipeline_utils.py", 1,
                           module="diffusers.pipelines.pipeline_utils")


@pytest.mark.slow
def test_cli_no_progress_prints_no_library_noise(tmp_path):
    write_fake_stimuli(tmp_path / "nsd")
    write_prepared(tmp_path / "prepared_subj01.h5", [0, 1], [2],
                   {"early": {"train": np.zeros((2, 2)), "test": np.zeros((1, 2))}})
    tiny = save_tiny_ldm(tiny_ldm(), tmp_path / "tiny")

    def command(model, out, *flags):
        return ["features", "--nsd-root", "nsd", "--prepared", "prepared_subj01.h5", "--model", str(model),
                "--out", out, "--batch-size", "2", *flags]

    # One interpreter, three commands: the bundled and a diffusers-folder model with --no-progress,
    # then the diffusers folder again with progress, which shows what the first two must not.
    script = ("import sys; from brain2image.cli import main\n"
              f"assert main({command('bundled', 'quiet_bundled', '--no-progress')!r}) == 0\n"
              f"assert main({command(tiny, 'quiet_tiny', '--no-progress')!r}) == 0\n"
              "print('=== with progress ===', file=sys.stderr)\n"
              f"assert main({command(tiny, 'loud_tiny')!r}) == 0\n")
    env = {k: v for k, v in os.environ.items() if k != "TQDM_DISABLE"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONWARNINGS="default")
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    quiet, _, loud = done.stderr.partition("=== with progress ===")
    assert loud, done.stderr
    for noise in NOISE:
        assert noise not in quiet, (noise, quiet)
    for noise in NOISE[:-1]:  # the bars; brain2image loads with `dtype=`, so no FutureWarning is left
        assert noise in loud, (noise, loud)
    for out in ("quiet_bundled", "quiet_tiny", "loud_tiny"):
        assert sorted(p.suffix for p in (tmp_path / out).iterdir()) == [".h5", ".h5", ".json"]
