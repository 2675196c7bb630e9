"""Distribution strategies, precision, and the batch-size / learning-rate scaling rule.

`--strategy` picks a real `tf.distribute` strategy, or on JAX a `keras.distribution` one:

| name             | what                                                                          |
|------------------|-------------------------------------------------------------------------------|
| `auto`           | `mirrored` over all GPUs when there are several, else `default`               |
| `default`        | TensorFlow's default strategy (one device, no replication)                    |
| `one_device`     | `OneDeviceStrategy` on the first GPU, else the CPU                            |
| `mirrored`       | `MirroredStrategy` over all GPUs (or all logical CPUs when there is no GPU)   |
| `multi_worker`   | `MultiWorkerMirroredStrategy`; the cluster comes from `TF_CONFIG`             |
| `tpu`            | `TPUStrategy` on the TPU found by `TPUClusterResolver`                        |
| `data_parallel`  | JAX: `keras.distribution.DataParallel`, each batch split over all devices     |
| `model_parallel` | JAX: `keras.distribution.ModelParallel`, the kernels split over all devices   |

Scaling rule: the recipe's `batch_size` is per replica, so the global batch is
`batch_size x replicas`; the learning rate follows with `scale_lr`: `linear` (Goyal et al. 2017,
lr x replicas), `sqrt` (Krizhevsky 2014, lr x sqrt(replicas), gentler for adaptive optimizers) or
`none`.

On other Keras backends (JAX, PyTorch) the `tf.distribute` strategies cannot place the model:
there `auto` means `default` (one device) and the replicating strategies are refused before any
work (`check_strategy_backend`). On JAX, `data_parallel` and `model_parallel` shard through
`keras.distribution` instead (workbench.sharding); their batch is the global batch, so they report
one replica and nothing is scaled; on other backends they are refused.

`WORKBENCH_CPU_DEVICES=N` splits the CPU into N logical devices before TensorFlow starts, so
mirrored training can be exercised on a machine with no GPU.
"""

from __future__ import annotations

import json
import math
import os

from workbench.errors import WorkbenchError


def configure_cpu_devices():
    """Apply `WORKBENCH_CPU_DEVICES` (must run before TensorFlow initializes its devices)."""
    count = os.environ.get("WORKBENCH_CPU_DEVICES")
    if not count:
        return
    import tensorflow as tf

    if not count.isdigit() or int(count) < 1:
        raise WorkbenchError(f"WORKBENCH_CPU_DEVICES must be a positive whole number, got {count!r}")
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(int(count))])


def cluster_spec():
    """The parsed `TF_CONFIG`, or None when it is not set."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return None
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as error:
        raise WorkbenchError(f"TF_CONFIG is not valid JSON: {error}") from None
    if "cluster" not in config or "task" not in config:
        raise WorkbenchError("TF_CONFIG needs 'cluster' and 'task' entries, e.g. "
                             '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                             '"task": {"type": "worker", "index": 0}}')
    return config


def is_chief_worker():
    """Whether this process writes the run's outputs (always, unless it is a non-chief worker)."""
    config = cluster_spec()
    if config is None:
        return True
    task = config["task"]
    if "chief" in config["cluster"]:
        return task.get("type") == "chief"
    return task.get("type") == "worker" and int(task.get("index", 0)) == 0


# Strategies that place and replicate the model with tf.distribute: TensorFlow backend only.
TENSORFLOW_STRATEGIES = ("one_device", "mirrored", "multi_worker", "tpu")


def check_strategy_backend(name: str, backend: str, batch_size=None):
    """A `tf.distribute` strategy asked of a model on another Keras backend, or a
    `keras.distribution` one off JAX, is bad input."""
    from workbench.sharding import JAX_STRATEGIES, check_jax_strategy

    if name in JAX_STRATEGIES:
        import keras

        count = len(keras.distribution.list_devices()) if backend == "jax" else 1
        check_jax_strategy(name, backend, count, batch_size)
    if backend != "tensorflow" and name in TENSORFLOW_STRATEGIES:
        raise WorkbenchError(
            f"strategy '{name}' is a tf.distribute strategy and needs the TensorFlow backend, "
            f"but KERAS_BACKEND is '{backend}'; use --strategy default (or auto) on {backend}, "
            "or run with KERAS_BACKEND=tensorflow")


def resolve_strategy(name: str):
    import keras

    from workbench.sharding import JAX_STRATEGIES, DistributionStrategy

    if name in JAX_STRATEGIES:
        # A keras.distribution must be current whenever the sharded model runs, not only while
        # it is built: the run's stages all use it.
        return DistributionStrategy(name).activate()
    import tensorflow as tf

    # Physical, not logical: listing logical devices starts the runtime, after which a
    # multi-worker strategy can no longer configure its collective ops.
    gpus = tf.config.list_physical_devices("GPU")
    if name == "auto":
        several = len(gpus) > 1 and keras.backend.backend() == "tensorflow"
        name = "mirrored" if several else "default"
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0")
    if name == "mirrored":
        if gpus:
            return tf.distribute.MirroredStrategy()
        cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices=cpus)
    if name == "multi_worker":
        if cluster_spec() is None:
            raise WorkbenchError(
                "strategy 'multi_worker' needs the cluster in the TF_CONFIG environment variable "
                "(see README, 'Several machines')")
        return _reduce_leaf_by_leaf(tf.distribute.MultiWorkerMirroredStrategy())
    if name == "tpu":
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
        except (ValueError, RuntimeError, tf.errors.OpError) as error:
            raise WorkbenchError(f"strategy 'tpu': no TPU found ({str(error).splitlines()[0]}); "
                                 "use --strategy auto on this machine") from None
        return tf.distribute.TPUStrategy(resolver)
    raise WorkbenchError(f"unknown strategy '{name}'")


def _reduce_leaf_by_leaf(strategy):
    """Let Keras 3's `fit` run under `MultiWorkerMirroredStrategy`.

    Keras 3.15 asks the strategy to reduce whole nested batches (`_maybe_symbolic_build`) and
    scalar logs along `axis=0` (`reduce_per_replica`); the collective strategy takes neither and
    `fit` fails at once (keras-team/keras#20585). Reducing each leaf on its own, along the axis
    only when the leaf has one, is what Keras means by those calls."""
    import tensorflow as tf

    reduce = strategy.reduce

    def rank(value):
        if isinstance(value, tf.distribute.DistributedValues):
            value = strategy.experimental_local_results(value)[0]
        return len(value.shape)

    def reduce_leaves(reduce_op, value, axis=None):
        return tf.nest.map_structure(
            lambda leaf: reduce(reduce_op, leaf,
                                axis=axis if axis is None or rank(leaf) > axis else None),
            value)

    strategy.reduce = reduce_leaves
    return strategy


def scaled_learning_rate(learning_rate: float, replicas: int, rule: str) -> float:
    if rule == "linear":
        return learning_rate * replicas
    if rule == "sqrt":
        return learning_rate * math.sqrt(replicas)
    return learning_rate


def set_precision(policy: str):
    """Set Keras' global dtype policy; mixed_float16 gets loss scaling from `compile`."""
    import keras

    keras.mixed_precision.set_global_policy(policy)
