"""The devices the timing groups run on, and their human-readable names."""

from __future__ import annotations

import platform

import tensorflow as tf

NO_GPU_REASON = "no GPU visible to TensorFlow (tf.config.list_physical_devices('GPU') is empty)"


def device_name(device: str) -> str:
    """The GPU's name from TensorFlow, or the CPU's model name from /proc/cpuinfo."""
    if device == "GPU":
        gpu = tf.config.list_physical_devices("GPU")[0]
        details = tf.config.experimental.get_device_details(gpu)
        return str(details.get("device_name") or gpu.name)
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "CPU"
