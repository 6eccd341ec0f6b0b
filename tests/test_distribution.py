"""Where training runs (`tlcore.training.distribution`): the strategy chosen for the devices
present and ``TF_CONFIG``, the mixed-precision policy, and the errors a user can cause."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT
from tlcore.training import distribution

CLUSTER = {"worker": ["10.0.0.1:12345", "10.0.0.2:12345"]}
TF_CONFIG = json.dumps({"cluster": CLUSTER, "task": {"type": "worker", "index": 0}})


class _FakeStrategy:
    """Stands in for a multi-device strategy, which would need the devices (or a cluster)."""

    def __init__(self, devices=None):
        self.devices = devices
        self.num_replicas_in_sync = len(devices) if devices else 2


@pytest.fixture
def tf(monkeypatch):
    """TensorFlow with the machine's GPUs hidden (see `gpus`); the float32 policy restored."""
    import keras
    import tensorflow as tf

    monkeypatch.delenv("TF_CONFIG", raising=False)
    gpus(monkeypatch, tf, 0)
    yield tf
    keras.mixed_precision.set_global_policy("float32")


def gpus(monkeypatch, tf, count: int) -> None:
    """Makes TensorFlow report ``count`` GPUs, so the choice does not depend on this machine."""
    real = tf.config.list_physical_devices
    fake = [tf.config.PhysicalDevice(f"/physical_device:GPU:{i}", "GPU") for i in range(count)]
    monkeypatch.setattr(
        tf.config,
        "list_physical_devices",
        lambda kind=None: fake if kind == "GPU" else real(kind),
    )


def _policy() -> str:
    import keras

    return keras.mixed_precision.global_policy().name


# --------------------------------------------------------------------------- TF_CONFIG


def test_no_tf_config_means_no_cluster(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert distribution._cluster_from_tf_config() is None
    monkeypatch.setenv("TF_CONFIG", "")
    assert distribution._cluster_from_tf_config() is None
    monkeypatch.setenv("TF_CONFIG", json.dumps({"task": {"type": "worker", "index": 0}}))
    assert distribution._cluster_from_tf_config() is None  # a task but no cluster


def test_the_cluster_is_read_from_tf_config(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", TF_CONFIG)
    assert distribution._cluster_from_tf_config() == CLUSTER


def test_tf_config_that_is_not_json_is_refused_quoting_it(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", "{cluster: workers}")
    with pytest.raises(ValueError, match=r"TF_CONFIG is not valid JSON\. Received: .*workers"):
        distribution._cluster_from_tf_config()


@pytest.mark.parametrize(
    "raw", ['["10.0.0.1:12345"]', '"worker"', '{"cluster": ["10.0.0.1:12345"]}']
)
def test_tf_config_of_the_wrong_shape_says_what_it_must_look_like(monkeypatch, raw):
    monkeypatch.setenv("TF_CONFIG", raw)
    with pytest.raises(ValueError, match="TF_CONFIG must be a JSON object such as") as info:
        distribution._cluster_from_tf_config()
    assert raw in str(info.value)


# --------------------------------------------------------------------------- the strategy


def test_one_cpu_gets_the_default_strategy_in_float32(tf):
    placement = distribution.choose_placement("auto", "auto")

    assert placement.kind == "one_device" and placement.replicas == 1
    assert placement.strategy is tf.distribute.get_strategy()  # TensorFlow's default
    assert placement.mixed_precision is False and _policy() == "float32"
    assert placement.description == "Training on the CPU (one device, 1 replica(s))"


def test_one_gpu_gets_the_default_strategy_and_mixed_precision_on_auto(tf, monkeypatch):
    gpus(monkeypatch, tf, 1)
    placement = distribution.choose_placement("auto", "auto")

    assert placement.kind == "one_device" and placement.replicas == 1
    assert placement.mixed_precision is True and _policy() == "mixed_float16"
    assert (
        placement.description == "Training on the GPU (one device, 1 replica(s)), mixed precision"
    )
    assert distribution.choose_placement("auto", "off").mixed_precision is False
    assert _policy() == "float32"


def test_mixed_precision_on_is_honoured_even_on_the_cpu(tf):
    placement = distribution.choose_placement("one_device", "on")
    assert placement.mixed_precision is True and _policy() == "mixed_float16"
    assert placement.description.endswith(", mixed precision")


def test_several_gpus_are_mirrored_on_auto(tf, monkeypatch):
    gpus(monkeypatch, tf, 2)
    monkeypatch.setattr(tf.distribute, "MirroredStrategy", _FakeStrategy)

    placement = distribution.choose_placement("auto", "off")

    assert placement.kind == "mirrored" and isinstance(placement.strategy, _FakeStrategy)
    assert placement.strategy.devices is None  # every local GPU, as TensorFlow picks them
    assert placement.description == "Training on 2 GPUs (mirrored, 2 replica(s))"
    # Asked for one device, one device it is, however many GPUs there are.
    assert distribution.choose_placement("one_device", "off").kind == "one_device"


def test_a_cluster_in_tf_config_means_multi_worker_on_auto(tf, monkeypatch):
    monkeypatch.setenv("TF_CONFIG", TF_CONFIG)
    monkeypatch.setattr(tf.distribute, "MultiWorkerMirroredStrategy", _FakeStrategy)

    placement = distribution.choose_placement("auto", "off")

    assert placement.kind == "multi_worker" and isinstance(placement.strategy, _FakeStrategy)
    assert (placement.worker, placement.workers, placement.is_chief) == (0, 2, True)
    assert placement.description == (
        "Training on 2 workers (multi worker, 2 replica(s)); this is worker 0, the chief"
    )


def test_a_worker_other_than_0_is_not_the_chief_and_says_so(tf, monkeypatch):
    monkeypatch.setenv(
        "TF_CONFIG", json.dumps({"cluster": CLUSTER, "task": {"type": "worker", "index": 1}})
    )
    monkeypatch.setattr(tf.distribute, "MultiWorkerMirroredStrategy", _FakeStrategy)

    placement = distribution.choose_placement("multi_worker", "off")

    assert (placement.worker, placement.workers, placement.is_chief) == (1, 2, False)
    assert placement.description.endswith(
        "; this is worker 1, writing only what it needs to resume"
    )


@pytest.mark.parametrize(
    ("cluster", "task", "chief"),
    [
        (CLUSTER, ("worker", 0), True),
        (CLUSTER, ("worker", 1), False),
        (CLUSTER | {"chief": ["10.0.0.9:12345"]}, ("chief", 0), True),
        (CLUSTER | {"chief": ["10.0.0.9:12345"]}, ("worker", 0), False),  # TensorFlow's rule
    ],
)
def test_the_chief_is_the_chief_task_else_worker_0(cluster, task, chief):
    assert distribution._is_chief(cluster, *task) is chief


@pytest.mark.parametrize(
    "task", [{"type": "ps", "index": 0}, {"type": "worker", "index": "one"}, ["worker", 0]]
)
def test_a_task_that_names_no_worker_is_refused_quoting_tf_config(monkeypatch, task):
    raw = json.dumps({"cluster": CLUSTER, "task": task})
    monkeypatch.setenv("TF_CONFIG", raw)
    with pytest.raises(ValueError, match="TF_CONFIG's task must say which machine") as info:
        distribution._task_from_tf_config()
    assert raw in str(info.value)


def test_multi_worker_datasets_are_sharded_by_data(tf):
    dataset = distribution.shard_by_data(tf.data.Dataset.range(4))
    policy = dataset.options().experimental_distribute.auto_shard_policy
    assert policy == tf.data.experimental.AutoShardPolicy.DATA


def test_every_batch_norm_layer_is_synchronized_also_inside_a_nested_backbone(tf):
    import keras

    inner = keras.Sequential([keras.Input((4,)), keras.layers.BatchNormalization()])
    outer = keras.Sequential([keras.Input((4,)), inner, keras.layers.BatchNormalization()])

    assert distribution.synchronize_batch_norm(outer) == 2
    assert all(layer.synchronized for layer in (inner.layers[0], outer.layers[1]))
    assert distribution.synchronize_batch_norm(outer) == 0  # already done


def test_multi_worker_without_a_cluster_is_refused_saying_what_is_missing(tf):
    with pytest.raises(ValueError, match=r"'multi_worker' needs TF_CONFIG.*TF_CONFIG unset"):
        distribution.choose_placement("multi_worker", "off")


def test_bad_tf_config_stops_the_choice_before_any_strategy_is_built(tf, monkeypatch):
    monkeypatch.setenv("TF_CONFIG", "not json")
    built = []
    monkeypatch.setattr(tf.distribute, "MultiWorkerMirroredStrategy", lambda: built.append(1))
    with pytest.raises(ValueError, match="TF_CONFIG is not valid JSON"):
        distribution.choose_placement("auto", "off")
    assert built == []


def test_mirrored_on_a_cpu_uses_the_logical_devices_split_for_testing():
    """In a fresh process: the CPU must be split before TensorFlow initialises its devices."""
    script = (
        "from tlcore.training import distribution as d\n"
        "d.split_cpu_for_testing()\n"
        "p = d.choose_placement('mirrored', 'off')\n"
        "print(p.kind, p.replicas, p.description, sep='|')\n"
    )
    env = os.environ | {
        distribution.LOGICAL_CPUS_ENV: "2",
        "CUDA_VISIBLE_DEVICES": "",  # the CPU path even on a machine with GPUs
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    env.pop("TF_CONFIG", None)
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    kind, replicas, description = result.stdout.strip().splitlines()[-1].split("|")
    assert (kind, replicas) == ("mirrored", "2")
    assert description == "Training on 2 CPU device(s) (mirrored, 2 replica(s))"
