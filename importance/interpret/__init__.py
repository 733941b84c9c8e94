"""Input importance: saliency maps (Grad-CAM, occlusion, gradients ...) and their faithfulness.

The CAM core (:mod:`importance.interpret.cam`) is differentiable and usable inside a training step.
"""

from importance.interpret.cam import (
    CamPass,
    cam_map,
    cam_pass,
    find_cam_layer,
    grad_cam,
    grad_cam_maps,
    hires_cam,
    hires_cam_maps,
    resize_maps,
)
from importance.interpret.registry import (
    available_saliency,
    compute_saliency,
    get_saliency,
    register_saliency,
    unregister_saliency,
)

__all__ = [
    "available_saliency",
    "compute_saliency",
    "get_saliency",
    "register_saliency",
    "unregister_saliency",
    "CamPass",
    "cam_map",
    "cam_pass",
    "find_cam_layer",
    "grad_cam",
    "grad_cam_maps",
    "hires_cam",
    "hires_cam_maps",
    "resize_maps",
]
