"""``brain2image encode`` end to end on fsaverage (surface) data.

A fake NSD tree with fsaverage betas (10,500 vertices per hemisphere, so some ROI vertices lie
beyond fsaverage5's 10,242) is prepared with ``space="fsaverage"``; vertex group A ("early") is
driven linearly by a small z-like feature space, group B ("ventral") by a large c-like one.
"""

from __future__ import annotations

import io
import json

import h5py
import matplotlib.image
import nibabel as nib
import numpy as np
import pytest
from nsd_tree_writer import BETA_VERSION, write_nsd_tree

from brain2image.cli import main
from brain2image.encoding.analysis import EncodingConfig, run_encoding_analysis
from brain2image.encoding.maps import FSAVERAGE5_N_VERTICES, plot_surface_map
from brain2image.formats.feature_store import FeatureStore
from brain2image.formats.prepared import load_prepared
from brain2image.sources.nsd import prepare_subject

N_VERTICES = 10_500  # per hemisphere; > 10,242 so the fsaverage5 cut-off is exercised
TPS = 60
N_A = N_B = 120  # per hemisphere, drawn on the ventral surface
N_BEYOND = 15  # "ventral" vertices per hemisphere at index >= 10,242 (not drawn on fsaverage5)
Z_SHAPE, C_DIM = (2, 4), 150
CONFIG = dict(roi="streams", summary_rois=["early", "ventral"], cv_folds=3, banded_n_iter=4)


def _ventral_patches(n_a: int, n_b: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per hemisphere: the ``n_a`` lowest fsaverage5 vertices (z of the inflated mesh), then the next ``n_b``.

    Contiguous patches on the underside, so the ventral view of the maps has faces to colour.
    """
    from nilearn import datasets, surface

    mesh = datasets.fetch_surf_fsaverage("fsaverage5")
    out = {}
    for side, hemi in (("left", "lh"), ("right", "rh")):
        coords = surface.load_surf_mesh(mesh[f"infl_{side}"]).coordinates
        order = np.argsort(coords[:, 2], kind="stable")
        out[hemi] = order[:n_a], order[n_a:n_a + n_b]
    return out


@pytest.fixture(scope="module")
def problem(tmp_path_factory):
    """Tree, prepared file, feature stores, and the vertex groups (truth)."""
    tmp = tmp_path_factory.mktemp("surface")
    rng = np.random.default_rng(7)
    tree = write_nsd_tree(tmp / "nsd", n_sessions=3, trials_per_session=TPS, n_images=100, n_shared=16,
                          formats=("hdf5",), n_vertices=(N_VERTICES, N_VERTICES), write_ncsnr=False, seed=5)
    label_dir = tree.root / "nsddata/freesurfer/fsaverage/label"
    beta_dir = tree.root / f"nsddata_betas/ppdata/subj01/fsaverage/{BETA_VERSION}"

    # Labels: 1 (early) = group A, 5 (ventral) = group B plus a few vertices beyond fsaverage5.
    patches = _ventral_patches(N_A, N_B)
    labels = {}
    for hemi in ("lh", "rh"):
        lab = np.zeros(N_VERTICES, np.int32)
        a, b = patches[hemi]
        lab[a] = 1
        lab[b] = 5
        lab[rng.choice(np.arange(FSAVERAGE5_N_VERTICES, N_VERTICES), N_BEYOND, replace=False)] = 5
        labels[hemi] = lab
        nib.save(nib.MGHImage(lab[:, None, None], np.eye(4)), label_dir / f"{hemi}.streams.mgz")
    streams = np.concatenate([labels["lh"], labels["rh"]])  # (lh + rh,) over both hemispheres

    # Features of every image of the tree; known linear maps drive A from z and B from c.
    ids = np.unique(np.concatenate(list(tree.ids.values())))
    z = rng.standard_normal((len(ids), *Z_SHAPE)).astype(np.float32)
    c = rng.standard_normal((len(ids), C_DIM)).astype(np.float32)
    is_a, is_b = streams == 1, streams == 5
    w_a = rng.standard_normal((z[0].size, is_a.sum())) / np.sqrt(z[0].size)
    w_b = rng.standard_normal((C_DIM, is_b.sum())) / np.sqrt(C_DIM) * 1.5
    for s in tree.sessions:
        rows = np.searchsorted(ids, tree.ids[s])
        data = rng.standard_normal((2 * N_VERTICES, TPS)).astype(np.float32)
        data[is_a] += (z[rows].reshape(TPS, -1) @ w_a).T.astype(np.float32)
        data[is_b] += (c[rows] @ w_b).T.astype(np.float32)
        for h, hemi in enumerate(("lh", "rh")):
            part = data[h * N_VERTICES:(h + 1) * N_VERTICES]
            nib.save(nib.MGHImage(part[:, None, None, :], np.eye(4)), beta_dir / f"{hemi}.betas_session{s:02d}.mgh")

    prepared = prepare_subject(tree.root, 1, tmp / "prepared_subj01.h5", space="fsaverage",
                               rois=("streams:early", "streams:ventral", "streams"), trials_per_session=TPS,
                               progress=False)
    stores = {}
    for name, values in (("z", z), ("c", c)):
        store = FeatureStore.create(tmp / f"{name}.h5", ids, values.shape[1:],
                                    {"feature": name, "model": "fake", "resolution": 0, "seed": 0})
        store.write(ids, values)
        stores[name] = store.finalize()
    flat = np.flatnonzero(streams > 0)
    return {"tmp": tmp, "prepared": prepared, "stores": stores, "streams": streams,
            "hemi": (flat >= N_VERTICES).astype(np.int8), "vertex": flat % N_VERTICES}


def _coloured_pixels(png, half: str = "left") -> int:
    """Pixels of one half of the figure whose red and blue differ (RdBu colours; grey background, black text)."""
    rgb = matplotlib.image.imread(png)[..., :3]
    cols = rgb.shape[1] // 2
    part = rgb[:, :cols] if half == "left" else rgb[:, cols:]
    return int(np.sum(np.abs(part[..., 0] - part[..., 2]) > 0.15))


def test_prepared_file_has_vertices(problem):
    data = load_prepared(problem["prepared"])
    assert data.space == "fsaverage" and data.attrs["n_vertices"] == [N_VERTICES, N_VERTICES]
    vertex, hemi = data.vertices("streams")
    np.testing.assert_array_equal(vertex, problem["vertex"])
    np.testing.assert_array_equal(hemi, problem["hemi"])
    assert data.n_voxels("early") == 2 * N_A and data.n_voxels("ventral") == 2 * (N_B + N_BEYOND)


@pytest.fixture(scope="module")
def library_run(problem):
    """``run_encoding_analysis`` with maps; returns its results and output folder."""
    out_dir = problem["tmp"] / "lib"
    res = run_encoding_analysis(problem["prepared"], problem["stores"], out_dir, config=EncodingConfig(**CONFIG))
    return res, out_dir / "encoding"


def test_run_encoding_analysis_on_fsaverage(problem, library_run):
    res, out = library_run
    labels = problem["streams"][problem["streams"] > 0]  # label of each modelled vertex, file order
    a, b = labels == 1, labels == 5
    n_vox = len(labels)

    with h5py.File(out / "results.h5", "r") as f:
        assert "ijk" not in f["voxels"]
        np.testing.assert_array_equal(f["voxels/vertex"][()], problem["vertex"])
        np.testing.assert_array_equal(f["voxels/hemi"][()], problem["hemi"])
        r_z, r_c = f["spaces/z/r"][()], f["spaces/c/r"][()]
        assert r_z.shape == r_c.shape == (n_vox,)
        assert "noise_ceiling" not in f  # no ncsnr on fsaverage
        part = {q: f[f"partitions/z__c/{q}"][()] for q in ("unique_a", "unique_b")}
    np.testing.assert_allclose(r_z, res.spaces["z"]["r"], rtol=1e-6)

    # The driving space wins on its own vertices, and carries the unique variance there.
    assert r_z[a].mean() > r_c[a].mean() + 0.2
    assert r_c[b].mean() > r_z[b].mean() + 0.2
    assert part["unique_a"][a].mean() > part["unique_b"][a].mean()
    assert part["unique_b"][b].mean() > part["unique_a"][b].mean()

    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_voxels"] == {"all": n_vox, "early": int(a.sum()), "ventral": int(b.sum())}
    for space, r in (("z", r_z), ("c", r_c)):
        assert summary["mean_r"][space]["early"] == pytest.approx(float(r[a].mean()), rel=1e-5)
        assert summary["mean_r"][space]["ventral"] == pytest.approx(float(r[b].mean()), rel=1e-5)
    assert "mean_nc_fraction" not in summary

    maps = out / "maps"
    assert sorted(p.name for p in maps.iterdir()) == sorted(
        ["r_z.png", "r_c.png", "unique_z_vs_c.png", "unique_c_vs_z.png"])  # PNG only: no NIfTI on a surface
    for png in maps.iterdir():
        # The left hemisphere panel (no colour bar there) shows the ROI patches in colour.
        assert _coloured_pixels(png, "left") > 300, png
    assert (out / "roi_summary.png").stat().st_size > 1000


def test_surface_map_draws_only_fsaverage5_vertices():
    import matplotlib.pyplot as plt

    from brain2image.encoding.maps import surface_arrays

    order = _ventral_patches(200, 0)
    vertex = np.concatenate([order["lh"][0], np.arange(FSAVERAGE5_N_VERTICES, N_VERTICES)])
    values = np.linspace(-1, 1, len(vertex))
    hemi = np.zeros(len(vertex), np.int8)
    left, right = surface_arrays(values, vertex, hemi)
    assert left.shape == right.shape == (FSAVERAGE5_N_VERTICES,) and np.isnan(right).all()
    np.testing.assert_array_equal(left[order["lh"][0]], values[:200])
    assert np.isfinite(left).sum() == 200
    beyond = vertex >= FSAVERAGE5_N_VERTICES
    coloured = []
    for keep in (~beyond, beyond):
        # Left hemisphere only: the right one has nothing to draw (background only, no nilearn warning).
        fig = plot_surface_map(values[keep], vertex[keep], hemi[keep], vmax=1.0)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=90)
        plt.close(fig)
        buffer.seek(0)
        coloured.append(_coloured_pixels(buffer, "left"))
    assert coloured[0] > 300
    assert coloured[1] == 0  # values only beyond fsaverage5 are not drawn


def test_encode_cli_on_fsaverage(problem, library_run):
    out_dir = problem["tmp"] / "cli"
    stores = problem["stores"]
    code = main(["encode", "--prepared", str(problem["prepared"]), "--features", f"z={stores['z']}",
                 "--features", f"c={stores['c']}", "--out", str(out_dir), "--roi", "streams",
                 "--summary-rois", "early", "ventral", "--cv-folds", "3", "--banded-n-iter", "4", "--no-maps"])
    assert code == 0
    out = out_dir / "encoding"
    reference = library_run[0]  # same settings, with maps (which do not change the fits)
    with h5py.File(out / "results.h5", "r") as f:
        np.testing.assert_array_equal(f["voxels/vertex"][()], problem["vertex"])
        for space in ("z", "c"):
            np.testing.assert_allclose(f[f"spaces/{space}/r"][()], reference.spaces[space]["r"], rtol=1e-5, atol=1e-6)
        assert json.loads(f.attrs["config"])["roi"] == "streams"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mean_r"]["z"]["early"] > summary["mean_r"]["c"]["early"]
    assert summary["mean_r"]["c"]["ventral"] > summary["mean_r"]["z"]["ventral"]
    assert not (out / "maps").exists()
