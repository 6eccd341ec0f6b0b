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

Several machines (TensorFlow's multi-worker pattern): every worker runs the same run and calls
``fit``; gradients are all-reduced, so the weights stay identical. Only the chief (worker 0,
or the ``chief`` task) writes the run's real outputs; a non-chief keeps what it needs to
resume and writes its checkpoints to a scratch folder that is deleted when it ends
(`tlcore.training.train`). Each worker reads the same shuffled order (the pipeline's shuffle
is a stateless permutation of the seed) and keeps its share of every global batch
(``AutoShardPolicy.DATA``: a list of image paths has no files to shard by). Batch-norm
layers that train use the global batch's statistics (``synchronized=True``), so their moving
averages are identical on every worker too.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

LOGICAL_CPUS_ENV = "TLS_LOGICAL_CPUS"


@dataclass(frozen=True)
class Placement:
    """The strategy chosen for a run and a sentence saying so, for the progress log.

    ``worker`` and ``workers``: this process's index in the cluster and the cluster's size
    (0 and 1 off a cluster). ``is_chief``: whether this process writes the run's outputs.
    """

    strategy: object  # tf.distribute.Strategy
    kind: str
    replicas: int
    mixed_precision: bool
    description: str
    worker: int = 0
    workers: int = 1
    is_chief: bool = True


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


def _task_from_tf_config() -> tuple[str | None, int]:
    """``(task type, index)`` of this process in ``TF_CONFIG``; ``(None, 0)`` without one.

    Raises:
        ValueError: ``task`` is not ``{"type": "worker", "index": N}`` (or type ``chief``).
    """
    raw = os.environ.get("TF_CONFIG") or "{}"
    task = json.loads(raw).get("task")
    if task is None:
        return None, 0
    kind = task.get("type") if isinstance(task, dict) else None
    index = task.get("index", 0) if isinstance(task, dict) else None
    if (
        kind not in ("chief", "worker")
        or not isinstance(index, int)
        or isinstance(index, bool)
        or index < 0
    ):
        raise ValueError(
            'TF_CONFIG\'s task must say which machine this is, such as {"type": "worker", '
            f'"index": 0}}. Received: TF_CONFIG={raw[:200]!r}'
        )
    return kind, index


def _is_chief(cluster: dict, task_type: str | None, task_index: int) -> bool:
    """TensorFlow's rule: the ``chief`` task, else worker 0 of a cluster without one."""
    if task_type is None or task_type == "chief":
        return True
    return task_type == "worker" and task_index == 0 and "chief" not in cluster


def _multi_worker_strategy():
    """`tf.distribute.MultiWorkerMirroredStrategy`, with ``reduce`` fixed for Keras 3.

    Keras 3's ``fit`` (3.15, on TensorFlow 2.21) calls ``strategy.reduce`` on a whole
    ``(x, y)`` batch to build the model, which the strategy does not support for a nest on
    several workers ("Attempt to convert a value (PerReplica...) to a Tensor"), then on
    every scalar metric with ``axis=0`` ("Invalid reduction dimension 0 for input with 0
    dimensions"): keras-team/keras#20585, tensorflow/tensorflow#72388. This subclass
    reduces a nest element by element and a scalar across replicas only; every other call
    is TensorFlow's own.
    """
    import tensorflow as tf

    class _MultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
        def reduce(self, reduce_op, value, axis):
            if not isinstance(value, tf.distribute.DistributedValues) and tf.nest.is_nested(value):
                return tf.nest.map_structure(lambda v: self.reduce(reduce_op, v, axis), value)
            if axis is not None and all(
                getattr(v, "shape", None) is not None and v.shape.rank == 0
                for v in self.experimental_local_results(value)
            ):
                axis = None  # a scalar per replica: the mean over replicas is the answer
            return super().reduce(reduce_op, value, axis)

    return _MultiWorkerMirroredStrategy()


def shard_by_data(dataset):
    """``dataset`` with ``AutoShardPolicy.DATA``: each worker keeps its share of every batch.

    For a multi-worker run (see the module's docstring); any other strategy ignores it.
    """
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def synchronize_batch_norm(model) -> int:
    """Makes every BatchNormalization layer of ``model`` use the global batch's statistics.

    For a multi-worker run: without it each worker's moving mean and variance follow its
    own share of the batches, and the workers end with different weights. Layers in
    inference mode (frozen) are unaffected. Returns how many layers were changed.
    """
    import keras

    def every_layer(parent):
        for layer in getattr(parent, "layers", []):
            yield layer
            yield from every_layer(layer)  # a backbone is a model inside the model

    changed = 0
    for layer in every_layer(model):
        if isinstance(layer, keras.layers.BatchNormalization) and not layer.synchronized:
            layer.synchronized = True
            changed += 1
    return changed


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
    task_type, worker, workers, is_chief = None, 0, 1, True
    kind = distribution
    if kind == "auto":
        kind = "multi_worker" if cluster else ("mirrored" if len(gpus) > 1 else "one_device")
    if kind == "multi_worker":
        if not cluster:
            raise ValueError(
                "distribution 'multi_worker' needs TF_CONFIG to describe the cluster "
                "(see the README). Received: TF_CONFIG unset"
            )
        task_type, worker = _task_from_tf_config()
        is_chief = _is_chief(cluster, task_type, worker)
        workers = sum(len(cluster.get(job) or []) for job in ("chief", "worker"))
        strategy = _multi_worker_strategy()
        where = f"{workers} workers"
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
    if kind == "multi_worker":
        role = "the chief" if is_chief else "writing only what it needs to resume"
        text += f"; this is {task_type or 'worker'} {worker}, {role}"
    return Placement(strategy, kind, replicas, use_mixed, text, worker, workers, is_chief)
