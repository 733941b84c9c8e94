"""Input importance: saliency maps (Grad-CAM, occlusion, gradients ...) and their faithfulness.

The CAM core (:mod:`importance.interpret.cam`) is differentiable and usable inside a training step.
"""

from importance.interpret.cam import (
    CamPass,
    cam_pass,
    find_cam_layer,
    grad_cam,
    grad_cam_maps,
    hires_cam,
    hires_cam_maps,
    resize_maps,
)

__all__ = [
    "CamPass",
    "cam_pass",
    "find_cam_layer",
    "grad_cam",
    "grad_cam_maps",
    "hires_cam",
    "hires_cam_maps",
    "resize_maps",
]
