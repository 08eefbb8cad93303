"""Reconstruction methods through diffusers' pipelines, on a tiny random model."""


import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from ldm_dummy import one_torch_thread, save_tiny_ldm, tiny_ldm  # noqa: F401
from method_plugins import HalfStrength, methods_registered
from PIL import Image

from brain2image.cli import main
from brain2image.config import ReconstructionConfig
from brain2image.errors import DataFormatError
from brain2image.ldm.reconstruct import generate_reconstructions, reconstruct, sample_seed

FAST = ReconstructionConfig(num_inference_steps=4, n_samples=2, batch_size=4)


@pytest.fixture(scope="module")
def model():
    return tiny_ldm()


def _inputs(seed=0, n=2):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, 5, 5, generator=g).numpy(), torch.randn(n, 8, 16, generator=g).numpy()


class _CountCalls:
    def __init__(self, module):
        self.n = 0
        self.handle = module.register_forward_hook(self)

    def __call__(self, *args):
        self.n += 1


def test_unet_call_counts_follow_strength(model):
    z, c = _inputs(n=1)
    config = ReconstructionConfig(n_samples=1)  # the paper's 50 DDIM steps, strength 0.8
    counter = _CountCalls(model.unet)
    try:
        out = generate_reconstructions(model, [7], z, c, methods=("z_plus_c",), config=config, progress=False)
        assert counter.n == 40
        counter.n = 0
        generate_reconstructions(model, [7], z, c, methods=("c_only",), config=config, progress=False)
        assert counter.n == 50
    finally:
        counter.handle.remove()
    assert out["z_plus_c"].shape == (1, 1, 16, 16, 3)


def test_shapes_and_z_only_is_the_vae_decoding(model):
    z, c = _inputs()
    out = generate_reconstructions(model, [3, 9], z, c, config=FAST, progress=False)
    assert out["z_only"].shape == (2, 2, 10, 10, 3)
    assert out["c_only"].shape == out["z_plus_c"].shape == (2, 2, 16, 16, 3)
    np.testing.assert_array_equal(out["z_only"][:, 0], model.decode_latents(torch.from_numpy(z)))
    np.testing.assert_array_equal(out["z_only"][:, 1], out["z_only"][:, 0])
    assert not np.array_equal(out["c_only"][:, 0], out["c_only"][:, 1])  # own seed per sample


def test_seeds_make_pixels_reproducible(model):
    z, c = _inputs()
    run = lambda seed: generate_reconstructions(model, [3, 9], z, c, methods=("z_plus_c",),  # noqa: E731
                                                config=ReconstructionConfig(num_inference_steps=4, n_samples=2,
                                                                            batch_size=4, seed=seed),
                                                progress=False)["z_plus_c"]
    first = run(0)
    np.testing.assert_array_equal(first, run(0))
    assert not np.array_equal(first, run(1))
    assert sample_seed(0, 3, 1) == sample_seed(0, 3, 1) != sample_seed(0, 3, 0)


def test_methods_use_only_their_inputs(model):
    z, c = _inputs()
    z2, c2 = _inputs(seed=5)
    a = generate_reconstructions(model, [3, 9], z, c, config=FAST, progress=False)
    b = generate_reconstructions(model, [3, 9], z2, c, methods=("c_only", "z_plus_c"), config=FAST, progress=False)
    d = generate_reconstructions(model, [3, 9], z, c2, methods=("z_only", "z_plus_c"), config=FAST, progress=False)
    np.testing.assert_array_equal(a["c_only"], b["c_only"])  # c_only ignores z
    np.testing.assert_array_equal(a["z_only"], d["z_only"])  # z_only ignores c
    assert not np.array_equal(a["z_plus_c"], b["z_plus_c"])
    assert not np.array_equal(a["z_plus_c"], d["z_plus_c"])


def test_oracle_is_z_plus_c_of_true_features(model):
    z, c = _inputs()
    out = generate_reconstructions(model, [3, 9], z.reshape(2, -1), c, methods=("z_plus_c", "oracle"),
                                   config=FAST, progress=False, z_true=z, c_true=c.reshape(2, -1))
    np.testing.assert_array_equal(out["oracle"], out["z_plus_c"])
    with pytest.raises(DataFormatError, match="expected"):
        generate_reconstructions(model, [3, 9], z, c[:, :4], methods=("c_only",), config=FAST, progress=False)


def test_reconstruct_writes_pngs_and_resumes(tmp_path, model):
    z, c = _inputs()
    config = ReconstructionConfig(num_inference_steps=4, n_samples=2, batch_size=4, methods=("z_only", "z_plus_c"))
    index_path = reconstruct(model, [3, 9], z, c, config=config, out_dir=tmp_path / "recon", progress=False)
    index = pd.read_csv(index_path)
    assert len(index) == 8 and list(index.columns) == ["test_id", "method", "sample", "seed", "path"]
    row = index[(index.method == "z_plus_c") & (index.test_id == 9) & (index["sample"] == 1)].iloc[0]
    assert row.path == "z_plus_c/9_1.png" and row.seed == sample_seed(0, 9, 1)
    arrays = generate_reconstructions(model, [3, 9], z, c, methods=("z_plus_c",), config=config, progress=False)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "recon" / row.path)), arrays["z_plus_c"][1, 1])
    assert (tmp_path / "recon" / "config.json").exists()

    (tmp_path / "recon" / "z_plus_c" / "3_0.png").unlink()
    counter = _CountCalls(model.unet)
    try:
        reconstruct(model, [3, 9], z, c, config=config, out_dir=tmp_path / "recon", progress=False)
    finally:
        counter.handle.remove()
    assert counter.n == 3  # only image 3 again: 0.8 x 4 steps, one batch of its 2 samples
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "recon" / "z_plus_c" / "3_0.png")),
                                  arrays["z_plus_c"][0, 0])
    with pytest.raises(DataFormatError, match="seed"):
        reconstruct(model, [3, 9], z, c, config=ReconstructionConfig(num_inference_steps=4, seed=1),
                    out_dir=tmp_path / "recon", progress=False)


def test_a_method_registered_in_code_draws_through_reconstruct(tmp_path, model):
    z, c = _inputs()
    config = ReconstructionConfig(num_inference_steps=4, n_samples=2, batch_size=4,
                                  methods=("z_plus_c", "z_plus_c_half"))
    with methods_registered(HalfStrength):
        counter = _CountCalls(model.unet)
        try:
            index = pd.read_csv(reconstruct(model, [3, 9], z, c, config=config, out_dir=tmp_path / "recon",
                                            progress=False))
        finally:
            counter.handle.remove()
    assert counter.n == 3 + 2  # one batch each: 0.8 x 4 steps, then 0.5 x 4 steps
    assert list(index.method.unique()) == ["z_plus_c", "z_plus_c_half"] and len(index) == 8
    half = generate_reconstructions(model, [3, 9], z, c, methods=("z_plus_c",), progress=False,
                                    config=ReconstructionConfig(num_inference_steps=4, n_samples=2, batch_size=4,
                                                                strength=0.5))["z_plus_c"]
    for row in index.itertuples():
        image = np.asarray(Image.open(tmp_path / "recon" / row.path))
        assert image.shape == (16, 16, 3)
        if row.method == "z_plus_c_half":
            np.testing.assert_array_equal(image, half[[3, 9].index(row.test_id), row.sample])


def test_reconstruct_command_reads_decoder_files(tmp_path, model):
    z, c = _inputs(n=3)
    for name, pred in (("z", z), ("c", c)):
        with h5py.File(tmp_path / f"subj01_{name}.h5", "w") as f:
            f["test/ids"] = np.array([12, 4, 30])
            f["test/pred"] = pred
    folder = save_tiny_ldm(model, tmp_path / "tiny")
    assert main(["reconstruct", "--model", str(folder), "--z", str(tmp_path / "subj01_z.h5"),
                 "--c", str(tmp_path / "subj01_c.h5"), "--ids", "30", "12", "--out",
                 str(tmp_path / "recon"), "--methods", "z_only", "c_only", "--n-samples", "1",
                 "--num-inference-steps", "2", "--no-progress"]) == 0
    index = pd.read_csv(tmp_path / "recon" / "index.csv")
    assert sorted(index.test_id.unique()) == [12, 30] and set(index.method) == {"z_only", "c_only"}
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "recon" / "z_only" / "30_0.png")),
                                  model.decode_latents(torch.from_numpy(z[2:3]))[0])
