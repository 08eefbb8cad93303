"""``brain2image run`` with ``random:sd-v1-4`` at Stable Diffusion v1.4's real feature and image sizes.

The study is a small simulated one; the run's prepared file keeps 6 training images and 2 test
images of it, and the schedule is 2 DDIM steps (1 denoising step of z + c), so that the features (z
from 320 px images through SD's VAE, c from CLIP ViT-L/14 on every caption) and the 512 px
generations stay within a few CPU minutes. ``c_only`` is left out: it draws 512 px images through
the same U-Net and VAE decoder as ``z_plus_c``.
"""

import json

import numpy as np
import pytest
from PIL import Image
from prepared_writer import write_prepared

from brain2image.cli import main
from brain2image.embedded.simulate.study import simulate_study
from brain2image.formats.feature_store import FeatureStore
from brain2image.formats.prepared import PreparedData
from brain2image.sources.nsd.prepare import prepare_subject

ROIS = ("early", "ventral", "nsdgeneral")


def _small_prepared(full: PreparedData, out, n_train_images: int = 6, n_test: int = 2):
    """A prepared file with one trial of each of the first training images and the first test images."""
    train_x = {roi: full.train(roi)[0] for roi in ROIS}
    train_ids = full.train(ROIS[0])[1]
    _, first = np.unique(train_ids, return_index=True)
    rows = np.sort(first)[:n_train_images]
    test_ids = full.test(ROIS[0])[1][:n_test]
    rois = {roi: {"train": train_x[roi][rows], "test": full.test(roi)[0][:n_test], "ijk": full.ijk(roi)}
            for roi in ROIS}
    return write_prepared(out, train_ids[rows], test_ids, rois,
                          attrs={"volume_shape": full.volume_shape, "affine": full.affine})


@pytest.fixture(scope="module")
def random_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("random_run")
    study = simulate_study(root / "study", n_images=300, n_shared=8, n_sessions=1, volume_shape=(12, 14, 10),
                           roi_sizes={"early": 120, "ventral": 120, "midventral": 10, "lateral": 10},
                           progress=False)
    full = PreparedData(prepare_subject(study.nsd_root, 1, root / "full.h5", progress=False))
    run = root / "run"
    _small_prepared(full, run / "prepared" / "subj01.h5")
    config = root / "run.toml"
    config.write_text(f"""
nsd_root = "{study.nsd_root}"
out_dir = "{run}"
model = "random:sd-v1-4"

[decoder]
alphas = [1.0, 100.0, 10000.0]
cv_folds = 2

[reconstruction]
num_inference_steps = 2
n_samples = 1
batch_size = 2
methods = ["z_only", "z_plus_c"]

[encoding]
enabled = false

[report]
n_images = 2
""")
    assert main(["run", str(config), "--no-progress"]) == 0
    return run


def test_features_have_stable_diffusion_v1_4_shapes(random_run):
    stores = {store.stem.rsplit("_", 1)[-1]: FeatureStore.open(store)
              for store in (random_run / "features").glob("*.h5")}
    assert stores["z"].feature_shape == (4, 40, 40)  # 320 px through SD's VAE (f = 8)
    assert stores["c"].feature_shape == (77, 768)    # CLIP ViT-L/14 last hidden state
    assert len(stores["z"].ids) == len(stores["c"].ids) == 8


def test_z_plus_c_is_512_px_and_z_only_is_320_px(random_run):
    sides = {}
    for method in ("z_only", "z_plus_c"):
        pngs = sorted((random_run / "recon" / method).glob("*.png"))
        assert len(pngs) == 2, method
        with Image.open(pngs[0]) as image:
            sides[method] = image.size
    assert sides == {"z_only": (320, 320), "z_plus_c": (512, 512)}


def test_outputs_are_marked_random_weights(random_run):
    metrics = json.loads((random_run / "metrics.json").read_text())
    assert metrics["weights"] == "random weights"
    assert "warnings" not in metrics  # a simulated study is not real NSD data
    assert "random weights" in (random_run / "report.html").read_text()
    assert np.isfinite(metrics["z_plus_c"]["pixcorr"])
