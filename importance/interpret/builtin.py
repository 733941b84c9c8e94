"""Imports the modules of the built-in saliency methods (their decorators register them)."""

from importance.interpret import cam, cam_variants, controls, gradients, occlusion  # noqa: F401
