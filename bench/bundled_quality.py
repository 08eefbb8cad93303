"""Quality of the bundled latent diffusion model on held-out procedural scenes.

Prints three figures (the bars of the latent-diffusion issue):

1. VAE reconstruction PSNR (dB) of held-out scenes at the native 64 px;
2. "oracle" z + c reconstructions (true z at the z resolution and true caption-averaged c,
   img2img at strength 0.8 of 50 DDIM steps, guidance 5): two-way identification on pixel
   correlation, over all samples;
3. text-to-image from the true c alone: share of samples that draw the captioned content
   (every named category and colour, judged by the bundled scene evaluator, which is first
   validated on the real held-out scenes), with a breakdown (recall of the named categories
   and colours, background accuracy, content match by number of objects).

Usage: ``python bench/bundled_quality.py [--model bundled] [--n-scenes 200] [--n-samples 2] [--threads 2]``
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from brain2image.config import ReconstructionConfig
from brain2image.embedded.scene_evaluator import SceneEvaluator, scene_targets
from brain2image.embedded.simulate.scenes import render_scenes, sample_scenes, scene_captions
from brain2image.evaluation.identification import two_way_identification
from brain2image.ldm.loading import load_ldm
from brain2image.ldm.reconstruct import generate_reconstructions

HELD_OUT_SEED = 98765  # distinct from the training scenes (1234) and the demo's study seeds


def _content_breakdown(evaluator: SceneEvaluator, samples: np.ndarray, scenes: list) -> dict[str, float]:
    """Where text-to-image succeeds, for samples of shape (n_scenes, n_samples, h, w, 3).

    Recall of the named categories / colours, background accuracy, and the content match by
    number of objects.
    """
    true = scene_targets(scenes)
    n_objects = np.array([len(scene.objects) for scene in scenes])
    flat = samples.transpose(1, 0, 2, 3, 4).reshape(-1, *samples.shape[2:])
    pred = evaluator.predict(flat)
    n_samples = samples.shape[1]
    named = {key: np.tile(true[key] > 0, (n_samples, 1)) for key in ("categories", "colours")}
    match = evaluator.content_match(flat, scenes * n_samples)
    out = {f"{key}_recall": float((pred[key] & named[key]).sum() / named[key].sum())
           for key in ("categories", "colours")}
    out["background_accuracy"] = float(np.mean(pred["background"] == np.tile(true["background"], n_samples)))
    for count in sorted(set(n_objects.tolist())):
        out[f"content_match_{count}_objects"] = float(match[np.tile(n_objects == count, n_samples)].mean())
    return out


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="bundled",
                        help="'bundled' or a folder exported by `brain2image train-bundled --export-to`")
    parser.add_argument("--n-scenes", type=int, default=200)
    parser.add_argument("--n-samples", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    return parser.parse_args()


def _vae_psnr(model, images: np.ndarray) -> float:
    """Mean PSNR (dB) of the VAE round trip at the model's native resolution."""
    with torch.no_grad():
        recon = model.decode_latents(model.encode_images(images, resolution=model.native_resolution))
    mse = ((recon.astype(np.float64) - images.astype(np.float64)) / 255.0) ** 2
    return float(np.mean(10 * np.log10(1.0 / mse.reshape(len(images), -1).mean(axis=1))))


def _content_figures(out: dict[str, np.ndarray], images: np.ndarray, scenes: list,
                     n_samples: int) -> dict[str, float]:
    """The scene evaluator's judgements: on the real images, text-to-image and oracle samples."""
    evaluator = SceneEvaluator.load()

    def match_rate(samples: np.ndarray) -> float:
        return float(np.mean([evaluator.content_match(samples[:, k], scenes).mean() for k in range(n_samples)]))

    figures = {
        "evaluator_content_match_on_real": round(float(evaluator.content_match(images, scenes).mean()), 4),
        "t2i_content_match": round(match_rate(out["c_only"]), 4),
        "oracle_zc_content_match": round(match_rate(out["oracle"]), 4),
    }
    breakdown = _content_breakdown(evaluator, out["c_only"], scenes)
    return figures | {f"t2i_{key}": round(value, 4) for key, value in breakdown.items()}


def main() -> None:
    """Measure the bundled model (or ``--model``) and print the figures."""
    args = _parse_args()
    torch.set_num_threads(args.threads)
    model = load_ldm(args.model)
    scenes = sample_scenes(args.n_scenes, HELD_OUT_SEED)
    images = render_scenes(scenes, model.native_resolution)
    rng = np.random.default_rng(HELD_OUT_SEED)
    captions = [scene_captions(s, rng) for s in scenes]

    # 1. VAE PSNR at the native resolution.
    psnr = _vae_psnr(model, images)
    # 2. Oracle z + c and 3. c only, both from the true features.
    z_true = model.encode_images(images).numpy()
    c_true = np.stack([model.encode_text(caps).mean(dim=0).numpy() for caps in captions])
    config = ReconstructionConfig(n_samples=args.n_samples, seed=0)
    start = time.perf_counter()
    out = generate_reconstructions(model, np.arange(args.n_scenes), z_true=z_true, c_true=c_true, c=c_true,
                                   methods=("oracle", "c_only"), config=config, progress=False)
    seconds = time.perf_counter() - start
    real = images.reshape(len(images), -1).astype(np.float64)
    oracle_id = float(np.mean([two_way_identification(real, out["oracle"][:, k].reshape(len(images), -1))
                               for k in range(args.n_samples)]))
    figures = {
        "n_scenes": args.n_scenes, "n_samples": args.n_samples,
        "vae_psnr_db": round(psnr, 2),
        "oracle_zc_two_way_id_pixel": round(oracle_id, 4),
        **_content_figures(out, images, scenes, args.n_samples),
        "seconds_per_sample": round(seconds / (2 * args.n_scenes * args.n_samples), 3),
    }
    for key, value in figures.items():
        print(f"{key:>34}: {value}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(figures, handle, indent=2)


if __name__ == "__main__":
    main()
