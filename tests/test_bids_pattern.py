"""The paper's pattern on the simulated BIDS study: single-trial betas by LSS are good enough to reconstruct.

The demo's BIDS study (``brain2image demo --source bids``: BOLD time series, fMRIPrep-style
derivatives) is prepared by the ``bids`` source — LSS betas from the time series, the split from
the events' ``trial_split`` column — and run through the pipeline with the bundled model, one
sample per test image. The LSS betas follow the true single-trial responses, and the
reconstructions show the paper's pattern: z only beats c only on PixCorr and pixel identification,
c only is far ahead on semantic identification, and z + c is best on the pixel metrics. A few
minutes on a 2-core CPU.
"""

from __future__ import annotations

import dataclasses
import json

import h5py
import numpy as np
import pytest

from brain2image.embedded.demo import bids_demo_config
from brain2image.embedded.simulate.bids_study import simulate_bids_study
from brain2image.formats.prepared import load_prepared
from brain2image.pipeline import run_pipeline

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The demo's BIDS study and a run of it (one sample, no encoding): the run folder."""
    out = tmp_path_factory.mktemp("bids_pattern")
    simulate_bids_study(out / "study", preset="demo", seed=0, progress=False)
    config = bids_demo_config(out, n_samples=1)
    config = dataclasses.replace(
        config, reconstruction=dataclasses.replace(config.reconstruction, methods=("z_only", "c_only", "z_plus_c")),
        encoding=dataclasses.replace(config.encoding, enabled=False))
    run_pipeline(config, progress=False)
    return out


def test_lss_betas_follow_the_true_single_trial_responses(run):
    prepared = load_prepared(run / "prepared" / "sub-01.h5")
    with h5py.File(run / "study" / "simulation_truth.h5", "r") as truth:
        responses, ijk = truth["responses"][()], truth["voxels/ijk"][()]
        is_test = truth["trials/is_test"][()]
    train, _ = prepared.train("early")
    columns = {tuple(v): k for k, v in enumerate(ijk)}
    true_train = responses[~is_test][:, [columns[tuple(v)] for v in prepared.ijk("early")]]
    r = [np.corrcoef(train[:, v], true_train[:, v])[0, 1] for v in range(train.shape[1])]
    assert np.median(r) > 0.4, np.median(r)
    assert np.median(prepared.ncsnr("early")) > 0.3


def test_reconstructions_show_the_papers_pattern(run):
    """The z only images beat c only on pixels, c only beats z only on semantics, z + c is best on pixels.

    SSIM is not part of it here: on this study z only and c only tie on it (0.671 and 0.673 with five
    samples per image; docs/own_data.md).
    """
    metrics = json.loads((run / "metrics.json").read_text())
    z, c, zc = metrics["z_only"], metrics["c_only"], metrics["z_plus_c"]
    assert z["pixcorr"] > c["pixcorr"] and z["takagi_pixel"] > c["takagi_pixel"], (z, c)
    assert c["id_semantic"] > z["id_semantic"] + 0.1 and c["takagi_semantic"] > z["takagi_semantic"] + 0.1, (z, c)
    assert zc["pixcorr"] > max(z["pixcorr"], c["pixcorr"]) and zc["ssim"] > max(z["ssim"], c["ssim"]), (zc, z, c)
