"""z_c / U-Net feature extraction with a tiny random U-Net, and the map pictures."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from brain2image.encoding.maps import (
    plot_roi_summary,
    plot_surface_map,
    plot_volume_map,
    save_volume_map,
    surface_arrays,
    values_to_volume,
    volume_image,
)
from brain2image.encoding.unet_features import (
    ZcConfig,
    denoise_with_hooks,
    extract_zc_stores,
    n_run_steps,
    step_indices,
    unet_feature_name,
)
from brain2image.formats.feature_store import FeatureStore

LAYERS = ["down_blocks.1", "mid_block", "up_blocks.1"]


@pytest.fixture(scope="module")
def tiny():
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=8, block_out_channels=(8, 16), layers_per_block=1, cross_attention_dim=16,
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), norm_num_groups=4,
                                attention_head_dim=2).eval()
    vae = AutoencoderKL(block_out_channels=[8, 16], down_block_types=["DownEncoderBlock2D"] * 2,
                        up_block_types=["UpDecoderBlock2D"] * 2, latent_channels=4, norm_num_groups=4,
                        layers_per_block=1).eval()
    scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    return unet, vae, scheduler


def _inputs(n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, 8, 8, generator=g), torch.randn(n, 5, 16, generator=g), torch.zeros(1, 5, 16)


def _gens(seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


def test_step_rules():
    assert n_run_steps(0.5, 50) == 25 and n_run_steps(0.25, 50) == 12 and n_run_steps(0.0, 50) == 0
    assert step_indices([0, 0.5, 1], 25) == [0, 12, 24]
    with pytest.raises(ValueError):
        n_run_steps(1.5, 50)


def test_strength_zero_returns_z(tiny):
    z, c, u = _inputs()
    zc, acts = denoise_with_hooks(*tiny, z, c, u, _gens([1, 2]), 0.0, num_inference_steps=10)
    torch.testing.assert_close(zc, z)
    assert acts == {}


def test_zc_shapes_determinism_and_hooks(tiny):
    unet, vae, scheduler = tiny
    z, c, u = _inputs(3)
    calls = []
    handle = unet.register_forward_hook(lambda *a: calls.append(1))
    try:
        zc, acts = denoise_with_hooks(unet, vae, scheduler, z, c, u, _gens([5, 6, 7]), 0.5, num_inference_steps=10,
                                      layers=LAYERS, step_fractions=[0.0, 1.0])
    finally:
        handle.remove()
    assert len(calls) == n_run_steps(0.5, 10) == 5
    assert zc.shape == z.shape and not torch.allclose(zc, z)
    assert set(acts) == {(layer, f) for layer in LAYERS for f in (0.0, 1.0)}
    assert acts[("mid_block", 0.0)].shape == (3, 16) and acts[("up_blocks.1", 1.0)].shape == (3, 8)
    assert not torch.allclose(acts[("mid_block", 0.0)], acts[("mid_block", 1.0)])
    # Same seeds → same features; the first image does not depend on its batch companions.
    zc2, acts2 = denoise_with_hooks(unet, vae, scheduler, z[:1], c[:1], u, _gens([5]), 0.5, num_inference_steps=10,
                                    layers=LAYERS, step_fractions=[0.0, 1.0])
    torch.testing.assert_close(zc2, zc[:1], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(acts2[("mid_block", 1.0)], acts[("mid_block", 1.0)][:1], rtol=1e-4, atol=1e-5)
    # Independent check of the first captured step: noise z to the run's first timestep and call the U-Net
    # on [unconditional, conditional]; the hook must hold the conditional half, spatially averaged.
    sched = type(scheduler).from_config(scheduler.config)
    sched.set_timesteps(10)
    t0 = sched.timesteps[10 - 5]
    noise = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(5))
    x = sched.add_noise(z[:1], noise, t0.reshape(1))
    seen = {}
    h = unet.get_submodule("mid_block").register_forward_hook(lambda m, a, o: seen.setdefault("o", o))
    try:
        with torch.no_grad():
            unet(torch.cat([x, x]), t0, encoder_hidden_states=torch.cat([u, c[:1]])).sample
    finally:
        h.remove()
    torch.testing.assert_close(acts[("mid_block", 0.0)][:1], seen["o"][1:].mean(dim=(2, 3)), rtol=1e-4, atol=1e-5)


def test_extract_zc_stores_resumable(tiny, tmp_path):
    unet, vae, scheduler = tiny
    ids = np.array([3, 10, 42])
    z, c, u = _inputs(3, seed=1)
    attrs = {"model": "tiny", "resolution": 16, "seed": 0}
    for name, values in (("z", z), ("c", c)):
        s = FeatureStore.create(tmp_path / f"{name}.h5", ids, values.shape[1:], {**attrs, "feature": name})
        s.write(ids, values.numpy())
        s.finalize()
    config = ZcConfig(zc_strengths=[0.0, 0.5], num_inference_steps=6, unet_layers=["mid_block"], unet_steps=[0.0, 1.0],
                      max_dim=4, batch_size=2, seed=100)
    out = extract_zc_stores(unet, vae, scheduler, u, tmp_path / "z.h5", tmp_path / "c.h5", tmp_path / "zc", config,
                            model_name="tiny")
    names = {"zc_0", "zc_0.5", unet_feature_name("mid_block", 0.5, 0.0), unet_feature_name("mid_block", 0.5, 1.0)}
    assert set(out) == names
    np.testing.assert_allclose(FeatureStore.open(out["zc_0"]).read(ids), z.numpy())
    store = FeatureStore.open(out["zc_0.5"])
    assert store.attrs["strength"] == 0.5 and store.attrs["guidance_scale"] == 5.0
    expected, _ = denoise_with_hooks(unet, vae, scheduler, z[1:2], c[1:2], u, _gens([100 + 10]), 0.5,
                                     num_inference_steps=6)
    np.testing.assert_allclose(store.read(ids[1:2]), expected.numpy(), rtol=1e-4, atol=1e-5)
    unet_store = FeatureStore.open(out[unet_feature_name("mid_block", 0.5, 1.0)])
    assert unet_store.feature_shape == (4,) and unet_store.attrs["projected_from"] == 16
    # A second call finds every store complete and returns the same files untouched.
    mtime = store.path.stat().st_mtime_ns
    again = extract_zc_stores(unet, vae, scheduler, u, tmp_path / "z.h5", tmp_path / "c.h5", tmp_path / "zc", config,
                              model_name="tiny")
    assert again == out and store.path.stat().st_mtime_ns == mtime


def test_volume_map_round_trip(tmp_path):
    import nibabel as nib

    ijk = np.array([[0, 1, 2], [3, 0, 1], [2, 2, 0]])
    values = np.array([0.5, -0.25, 1.0])
    vol = values_to_volume(values, ijk, (4, 3, 3))
    assert vol[3, 0, 1] == np.float32(-0.25) and np.count_nonzero(vol) == 3
    affine = np.array([[1.8, 0, 0, -30], [0, 1.8, 0, 10], [0, 0, 1.8, 2], [0, 0, 0, 1]])
    path = save_volume_map(values, ijk, (4, 3, 3), affine, tmp_path / "m.nii.gz")
    img = nib.load(path)
    np.testing.assert_allclose(img.affine, affine)
    np.testing.assert_allclose(img.get_fdata()[ijk[:, 0], ijk[:, 1], ijk[:, 2]], values)
    with pytest.raises(ValueError, match="outside"):
        values_to_volume(values, ijk + 5, (4, 3, 3))
    fig = plot_volume_map(volume_image(values, ijk, (4, 3, 3), affine), title="r")
    assert fig.axes


def test_surface_map_draws():
    import matplotlib.pyplot as plt

    vertex = np.array([0, 5, 10241, 10242, 7])
    hemi = np.array([0, 0, 1, 1, 1])
    values = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    left, right = surface_arrays(values, vertex, hemi)
    assert left.shape == (10242,) and left[5] == 0.2 and right[10241] == 0.3 and right[7] == 0.5
    assert np.isfinite(right).sum() == 2  # vertex 10242 is not on fsaverage5
    fig = plot_surface_map(values, vertex, hemi, title="r")
    assert len(fig.axes) >= 2
    plt.close(fig)


def test_roi_summary_bars():
    summary = {"z": {"early": 0.4, "ventral": 0.1}, "c": {"early": 0.1, "ventral": 0.3}}
    fig = plot_roi_summary(summary)
    bars = [p.get_height() for p in fig.axes[0].patches]
    assert bars == [0.4, 0.1, 0.1, 0.3]


def test_roi_summary_draws_no_bar_for_an_roi_without_encoded_voxels():
    import matplotlib.pyplot as plt

    summary = {"z": {"early": 0.4, "ventral": None}}
    fig = plot_roi_summary(summary)
    bars = [p.get_height() for p in fig.axes[0].patches]
    assert bars[0] == 0.4 and np.isnan(bars[1])
    plt.close(fig)
