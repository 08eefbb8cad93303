"""The evaluate stage: metric table of arrays, and recon folder + imgBrick → metrics.json."""

import json

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from brain2image.cli import main
from brain2image.embedded.simulate.scenes import render_scenes, sample_scenes
from brain2image.errors import DataFormatError, MissingFileError
from brain2image.evaluation.evaluate import evaluate_recon_dir, evaluate_reconstructions
from brain2image.evaluation.feature_networks import load_feature_network
from brain2image.evaluation.feature_spaces import network_extractors
from brain2image.evaluation.identification import takagi_identification, two_way_identification
from brain2image.evaluation.metrics import pixcorr, ssim
from brain2image.sources.nsd import NSDStimuli


@pytest.fixture(scope="module")
def real():
    return render_scenes(sample_scenes(8, 99), 64)


def noisy(images, k, sd, seed):
    rng = np.random.default_rng(seed)
    out = images[:, None].astype(float) + rng.normal(0, sd, size=(len(images), k, *images.shape[1:]))
    return np.clip(out, 0, 255).astype(np.uint8)


def test_perfect_reconstructions(real):
    m = evaluate_reconstructions(real, np.repeat(real[:, None], 2, axis=1))
    assert m["n_images"] == 8 and m["n_samples"] == 2
    for key in ("pixcorr", "ssim", "id_pixel", "takagi_pixel", "id_semantic", "takagi_semantic"):
        assert m[key] == pytest.approx(1.0), key


def test_pixel_space_matches_identification_functions(real):
    recon = noisy(real, 3, 60.0, 0)
    m = evaluate_reconstructions(real, recon, ("pixel",))
    def flat(x):
        return x.reshape(len(x), -1).astype(float) / 255

    assert m["id_pixel"] == pytest.approx(two_way_identification(flat(real), flat(recon[:, 0])), abs=1e-6)
    samples = recon.reshape(8, 3, -1).astype(float) / 255
    assert m["takagi_pixel"] == pytest.approx(takagi_identification(flat(real), samples), abs=1e-6)
    # PixCorr and SSIM are those of the first sample.
    assert m["pixcorr"] == pixcorr(real, recon[:, 0]) and m["ssim"] == ssim(real, recon[:, 0])
    assert m["pixcorr"] != pixcorr(real, recon[:, 1])
    assert "id_semantic" not in m


def test_network_spaces_with_random_weights(real):
    torch.set_num_threads(1)
    extractors = {**network_extractors(load_feature_network("alexnet", weights=None)),
                  **network_extractors(load_feature_network("effnet", weights=None))}
    m = evaluate_reconstructions(real[:4], np.repeat(real[:4, None], 2, axis=1), ("alexnet2", "effnet"),
                                 extractors=extractors)
    assert m["id_alexnet2"] == 1.0 and m["takagi_alexnet2"] == 1.0
    assert m["dist_effnet"] == pytest.approx(0.0, abs=1e-6)
    for layer in ("features5", "features12", "classifier5"):
        assert m[f"takagi_alexnet_{layer}"] == 1.0


def write_tree(tmp_path, real, ids):
    stim = tmp_path / "nsd" / "nsddata_stimuli" / "stimuli" / "nsd"
    stim.mkdir(parents=True)
    brick = np.zeros((20, 64, 64, 3), np.uint8)
    brick[ids] = real
    with h5py.File(stim / "nsd_stimuli.hdf5", "w") as f:
        f["imgBrick"] = brick
    recon = tmp_path / "recon"
    rows = []
    rng = np.random.default_rng(5)
    for method in ("oracle", "z_only"):
        (recon / method).mkdir(parents=True)
        for n, test_id in enumerate(ids):
            for sample in range(2):
                image = real[n] if method == "oracle" else rng.integers(0, 256, (32, 32, 3), np.uint8)
                Image.fromarray(image).save(recon / method / f"{test_id}_{sample}.png")
                rows.append((test_id, method, sample, sample, f"{method}/{test_id}_{sample}.png"))
    pd.DataFrame(rows, columns=["test_id", "method", "sample", "seed", "path"]).to_csv(
        recon / "index.csv", index=False)
    return tmp_path / "nsd", recon


def test_cli_writes_metrics_json(tmp_path, real):
    ids = [17, 2, 9, 4, 11, 0, 5, 13]
    nsd_root, recon = write_tree(tmp_path, real, ids)
    out = tmp_path / "metrics.json"
    assert main(["evaluate", "--recon", str(recon), "--nsd-root", str(nsd_root), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["methods"]) == {"oracle", "z_only"}
    oracle = result["methods"]["oracle"]
    assert oracle["pixcorr"] == pytest.approx(1.0) and oracle["id_semantic"] == 1.0
    assert result["methods"]["z_only"]["pixcorr"] < 0.5
    assert result["feature_spaces"] == ["pixel", "scene"]


def test_missing_inputs_raise(tmp_path, real):
    with pytest.raises(MissingFileError, match="index.csv"):
        evaluate_recon_dir(tmp_path, NSDStimuli(tmp_path), tmp_path / "m.json")
    nsd_root, recon = write_tree(tmp_path, real, list(range(8)))
    path = nsd_root / "nsddata_stimuli" / "stimuli" / "nsd" / "nsd_stimuli.hdf5"
    with h5py.File(path, "w") as f:
        f["images"] = np.zeros((1, 2, 2, 3), np.uint8)
    with pytest.raises(DataFormatError, match="imgBrick"):
        evaluate_recon_dir(recon, NSDStimuli(nsd_root), tmp_path / "m.json")
    assert not (tmp_path / "m.json").exists()
