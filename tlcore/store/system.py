"""Facts about this machine for the Home page's system panel and the CLI.

Reading them never imports TensorFlow (seconds, and memory the web server should not
spend): versions come from the installed packages' metadata, and the devices TensorFlow
sees from ``cache/devices.json``, which every training worker writes as it starts
(`record_devices`), since it has TensorFlow loaded anyway.
"""

from __future__ import annotations

import os
import platform
from importlib import metadata

from tlcore.fileio import atomic_write_json, read_json
from tlcore.store.workspace import Workspace

DEVICES_FILE = "devices.json"


def _version(*distributions: str) -> str:
    """The installed version of the first of ``distributions`` that is installed."""
    for name in distributions:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return "not installed"


def record_devices(ws: Workspace, devices: list[dict]) -> None:
    """Stores the devices a worker's TensorFlow sees (``[{"name", "type"}]``)."""
    ws.cache_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(ws.cache_dir / DEVICES_FILE, {"devices": devices})


def system_info(ws: Workspace) -> dict:
    """TensorFlow/Keras versions, the devices last seen, the workspace and its free disk.

    ``devices`` is None until a training worker has run on this workspace.
    """
    try:
        devices = read_json(ws.cache_dir / DEVICES_FILE).get("devices")
    except (OSError, ValueError, AttributeError):
        devices = None
    gpus = [d for d in devices or [] if d.get("type") == "GPU"]
    return {
        "python": platform.python_version(),
        # One import name, several distributions (tensorflow_cpu is what this project pins).
        "tensorflow": _version("tensorflow", "tensorflow-cpu", "tensorflow_cpu", "tf-nightly"),
        "keras": _version("keras"),
        "devices": devices,
        "gpu_count": len(gpus),
        "cpu_count": os.cpu_count(),
        "workspace": str(ws.root),
        "free_disk_bytes": ws.free_disk_bytes(),
        "keras_home": os.environ.get("KERAS_HOME", os.path.expanduser("~/.keras")),
    }
