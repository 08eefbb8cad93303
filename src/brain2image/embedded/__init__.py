"""The embedded default: a simulated NSD subject viewing procedural scenes, the small latent
diffusion model trained on such scenes (and its recipe), the scene evaluator, and the demo.

This subpackage may import the core; the core never imports it. It plugs into the core through
entry points (``brain2image.models``: ``bundled``; ``brain2image.feature_spaces``: ``scene``),
see :mod:`brain2image.plugins`.
"""
