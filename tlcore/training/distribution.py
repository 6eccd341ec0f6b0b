"""Where training runs: one device, all local GPUs, or a cluster of machines.

The setting (``RunConfig.distribution``) maps onto TensorFlow's own strategies rather than
anything home-made:

- ``one_device``: the default strategy (one GPU, or the CPU);
- ``mirrored``: `tf.distribute.MirroredStrategy` over every local GPU (or, with
  ``TLS_LOGICAL_CPUS=N``, over N logical CPU devices: how this is tested without GPUs);
- ``multi_worker``: `tf.distribute.MultiWorkerMirroredStrategy`, the cluster described by
  the ``TF_CONFIG`` environment variable;
- ``auto``: ``multi_worker`` when ``TF_CONFIG`` names a cluster, ``mirrored`` when more than
  one GPU is present, else ``one_device``.

Mixed precision (``RunConfig.mixed_precision``): ``auto`` turns it on only when a GPU is
present; on CPU float16 arithmetic is slower, not faster.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

LOGICAL_CPUS_ENV = "TLS_LOGICAL_CPUS"


@dataclass(frozen=True)
class Placement:
    """The strategy chosen for a run and a sentence saying so, for the progress log."""

    strategy: object  # tf.distribute.Strategy
    kind: str
    replicas: int
    mixed_precision: bool
    description: str


def _cluster_from_tf_config() -> dict | None:
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return None
    try:
        parsed = json.loads(raw)
    except ValueError:
        raise ValueError(
            f"TF_CONFIG is not valid JSON. Received: TF_CONFIG={raw[:200]!r}"
        ) from None
    cluster = parsed.get("cluster") if isinstance(parsed, dict) else None
    if not isinstance(parsed, dict) or not isinstance(cluster, dict | None):
        raise ValueError(
            'TF_CONFIG must be a JSON object such as {"cluster": {"worker": ["host:port", '
            '...]}, "task": {"type": "worker", "index": 0}}. '
            f"Received: TF_CONFIG={raw[:200]!r}"
        )
    return cluster or None


def split_cpu_for_testing() -> None:
    """Splits the CPU into ``$TLS_LOGICAL_CPUS`` logical devices (before TF initialises)."""
    import tensorflow as tf

    count = int(os.environ.get(LOGICAL_CPUS_ENV, "0") or 0)
    if count > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)]
        )


def choose_placement(distribution: str, mixed_precision: str) -> Placement:
    """Builds the strategy for ``distribution`` and applies the mixed-precision policy.

    Args:
        distribution: ``auto``, ``one_device``, ``mirrored`` or ``multi_worker``.
        mixed_precision: ``auto``, ``on`` or ``off``.

    Raises:
        ValueError: ``multi_worker`` without a cluster in ``TF_CONFIG``.
    """
    import keras
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    cluster = _cluster_from_tf_config()
    kind = distribution
    if kind == "auto":
        kind = "multi_worker" if cluster else ("mirrored" if len(gpus) > 1 else "one_device")
    if kind == "multi_worker":
        if not cluster:
            raise ValueError(
                "distribution 'multi_worker' needs TF_CONFIG to describe the cluster "
                "(see the README). Received: TF_CONFIG unset"
            )
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        where = f"{len(cluster.get('worker', []))} workers"
    elif kind == "mirrored":
        if gpus:
            strategy = tf.distribute.MirroredStrategy()
            where = f"{len(gpus)} GPUs"
        else:
            cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
            strategy = tf.distribute.MirroredStrategy(cpus)
            where = f"{len(cpus)} CPU device(s)"
    else:
        strategy = tf.distribute.get_strategy()
        where = "the GPU" if gpus else "the CPU"
    use_mixed = mixed_precision == "on" or (mixed_precision == "auto" and bool(gpus))
    keras.mixed_precision.set_global_policy("mixed_float16" if use_mixed else "float32")
    replicas = strategy.num_replicas_in_sync
    text = f"Training on {where} ({kind.replace('_', ' ')}, {replicas} replica(s))"
    if use_mixed:
        text += ", mixed precision"
    return Placement(strategy, kind, replicas, use_mixed, text)
