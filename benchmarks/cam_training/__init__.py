"""CAM-guided training axis: the radial CAM penalty against plain training on ``spurious_mnist``."""
