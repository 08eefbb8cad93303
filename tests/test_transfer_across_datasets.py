"""Transfer across data sets: a BIDS subject who saw some NSD images, decoded through NSD subjects' decoders.

Three simulated NSD-format subjects are the references (prepare, features, fit). A simulated BIDS +
fMRIPrep subject was shown some of the same images (``simulate --format bids --nsd-study``; its events
name each image's NSD id in ``nsd_id``, read with ``[source] identity_column``). Its single-trial betas
come from LSS in ``prepare``; the alignment needs only the images both saw.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from study_fixtures import tiny_study

from brain2image.cli import main
from brain2image.config import load_run_config
from brain2image.embedded.simulate.bids_study import simulate_bids_study
from brain2image.formats.decoder_file import DecoderFile
from brain2image.formats.prepared import PreparedData
from brain2image.pipeline import run_pipeline

pytestmark = pytest.mark.slow

#: The NSD-format references: 3 subjects, 600 images of which 40 shared, 2 sessions.
NSD_COHORT = {"n_subjects": 3, "n_shared": 40, "n_sessions": 2, "n_images": 600}
#: The BIDS subject: 30 of the NSD shared images as its test images (3 times each), 120 other NSD images once.
BIDS_SUBJECT = {"n_images": 150, "n_test": 30, "n_sessions": 2, "runs_per_session": 2, "trials_per_run": 53,
                "train_repeats": 1, "volume_shape": (12, 14, 10),
                "roi_sizes": {"early": 120, "ventral": 120, "midventral": 20, "lateral": 20}}
MASK = "{root}/derivatives/rois/{{subject}}/anat/{{subject}}_space-T1w_desc-{name}_mask.nii.gz"
COMMON = ("[decoder]\nalphas = [1.0, 100.0, 10000.0]\ncv_folds = 3\n"
          '[reconstruction]\nnum_inference_steps = 3\nn_samples = 1\nmethods = ["z_only", "z_plus_c"]\n'
          "[encoding]\nenabled = false\n[report]\nn_images = 2\n")


def _bids_config(root: Path, bids: Path, name: str, decoder: str) -> Path:
    masks = "\n".join(f'{roi} = "{MASK.format(root=bids, name=roi)}"' for roi in ("early", "ventral"))
    path = root / f"{name}.toml"
    path.write_text(f'out_dir = "{name}"\nsubject = "sub-01"\nmodel = "{root / "tiny_model"}"\n'
                    f'[source]\nkind = "bids"\nroot = "{bids}"\ntask = "images"\nimage_size = 64\n'
                    'split_column = "trial_split"\nidentity_column = "nsd_id"\nconfounds = ["csf", "white_matter"]\n'
                    f"[source.roi]\n{masks}\n" + COMMON +
                    f'[transfer]\nreference_subjects = [1, 2, 3]\nreference_run = "refs"\nsessions = 1\n'
                    f'decoder = "{decoder}"\n')
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("across")
    study, model = tiny_study(root, **NSD_COHORT)
    (root / "refs.toml").write_text(f'nsd_root = "{study.nsd_root}"\nout_dir = "refs"\nsubjects = [1, 2, 3]\n'
                                    f'model = "{model}"\n' + COMMON)
    run_pipeline(load_run_config(root / "refs.toml"), progress=False, stages=["prepare", "features", "fit"])
    bids = simulate_bids_study(root / "bids_study", seed=5, progress=False, nsd_study=root / "study", **BIDS_SUBJECT)
    for decoder in ("own", "transfer"):
        assert main(["--no-progress", "run", str(_bids_config(root, bids.bids_root, decoder, decoder))]) == 0
    return root


def test_a_bids_subject_is_decoded_through_nsd_subjects_decoders(runs):
    prepared = PreparedData(runs / "transfer" / "prepared" / "sub-01.h5")
    split = json.loads((runs / "transfer" / "transfer" / "split.json").read_text())
    assert len(split["candidates"]) == 30 and len(split["test_ids"]) == 15
    keys = prepared.stimulus_keys(np.asarray(split["test_ids"]))
    nsd_shared = {f"nsd:{i}" for i in PreparedData(runs / "refs" / "subj01" / "prepared" / "subj01.h5").trials(
        "test")["ids"].tolist()}
    assert set(keys.tolist()) <= nsd_shared  # matched by NSD id, not by the BIDS study's own image numbers
    for label in ("1", "2", "3"):  # aligned on the images both saw: the BIDS subject's first-session images
        assert len(split["alignment_ids"][label]) > 50
        assert not set(split["alignment_ids"][label]) & set(split["test_ids"])
    transfer = DecoderFile.read(runs / "transfer" / "decoders" / "sub-01_c_ventral.h5")
    own = DecoderFile.read(runs / "own" / "decoders" / "sub-01_c_ventral.h5")
    np.testing.assert_array_equal(transfer.test_ids, own.test_ids)  # the same held-out images
    assert transfer.summary()["mean_r"] > 0.2 and transfer.attrs["decoder_method"] == "transfer"
    evaluation = json.loads((runs / "transfer" / "evaluation.json").read_text())
    assert evaluation["decoders"]["c"]["reference_subjects"] == ["1", "2", "3"]
    assert (runs / "transfer" / "report.html").is_file()
