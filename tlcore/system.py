"""Facts about this machine for the Home page's system panel and the CLI."""

from __future__ import annotations

import os
import platform

from tlcore.workspace import Workspace


def system_info(ws: Workspace) -> dict:
    """TensorFlow/Keras versions, the devices TensorFlow sees, the workspace and its free disk.

    Imports TensorFlow (a few seconds the first time in a process).
    """
    import keras
    import tensorflow as tf

    devices = [{"name": d.name, "type": d.device_type} for d in tf.config.list_physical_devices()]
    gpus = [d for d in devices if d["type"] == "GPU"]
    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "keras_backend": keras.backend.backend(),
        "devices": devices,
        "gpu_count": len(gpus),
        "cpu_count": os.cpu_count(),
        "workspace": str(ws.root),
        "free_disk_bytes": ws.free_disk_bytes(),
        "keras_home": os.environ.get("KERAS_HOME", os.path.expanduser("~/.keras")),
    }
