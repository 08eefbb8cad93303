"""The embedded default: a simulated subject, the bundled model, the scene evaluator, the demo.

A simulated NSD subject views procedural scenes; a small latent diffusion model trained on such
scenes (and its recipe), the scene evaluator, and the demo live here.

This subpackage may import the core; the core never imports it. It plugs into the core through
entry points (``brain2image.models``: ``bundled``; ``brain2image.feature_spaces``: ``scene``),
see :mod:`brain2image.plugins`.
"""
