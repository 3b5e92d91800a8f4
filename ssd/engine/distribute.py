"""Where a step runs: the `tf.distribute` strategy, this worker's shard, the precision policy.

The global batch is split over workers (each reads its shard of the samples through its own
pipeline) and then over each worker's local replicas. Only the chief (worker 0) writes the run
directory.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import NamedTuple

import keras
import tensorflow as tf

from ssd.engine.recipe import PRECISIONS, STRATEGIES
from ssd.data.pipeline import Batch

# Keras dtype policy of each TrainConfig.mixed_precision: float32 stays, the others mix.
POLICIES = {name: name if name == "float32" else f"mixed_{name}" for name in PRECISIONS}


class WorkerShard(NamedTuple):
    """This worker's place in the cluster; chief = index 0."""

    index: int
    count: int
    is_chief: bool


@contextlib.contextmanager
def precision_policy(name: str) -> Iterator[None]:
    """Keras dtype policy `name` (float32, bfloat16, float16) for the layers built inside, then the old one."""
    if name not in POLICIES:
        raise ValueError(f"mixed_precision must be one of {tuple(POLICIES)}, got {name!r}")
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(POLICIES[name])
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def make_strategy(kind: str = "auto") -> tf.distribute.Strategy:
    """'auto': multi-worker when TF_CONFIG is set, mirrored over several GPUs, else one device.

    'mirrored' without GPUs mirrors over the logical CPU devices (how the tests run it).
    """
    if kind not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {kind!r}")
    if kind == "auto":
        if os.environ.get("TF_CONFIG"):
            kind = "multi_worker"
        elif len(tf.config.list_logical_devices("GPU")) > 1:
            kind = "mirrored"
        else:
            kind = "default"
    if kind == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if kind == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        return tf.distribute.MirroredStrategy(devices)
    return tf.distribute.get_strategy()


def worker_shard(strategy: tf.distribute.Strategy) -> WorkerShard:
    """(this worker's index, number of workers, is chief) under `strategy`."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return WorkerShard(0, 1, True)
    spec = resolver.cluster_spec()
    ordered = [(t, i) for t in ("chief", "worker") if t in spec.jobs for i in range(spec.num_tasks(t))]
    index = ordered.index((resolver.task_type, resolver.task_id))
    return WorkerShard(index, len(ordered), index == 0)


def check_batch_size(batch_size: int, num_replicas: int) -> None:
    """The global batch must split evenly over the replicas (`strategy.num_replicas_in_sync`)."""
    if batch_size % num_replicas:
        raise ValueError(f"batch_size {batch_size} must be divisible by the number of replicas ({num_replicas})")


def distribute_batch(strategy: tf.distribute.Strategy, batch: Batch) -> dict:
    """This worker's `batch.arrays()` split over its local replicas (NumPy views -> tensors, one copy)."""
    arrays = batch.arrays()
    if strategy.num_replicas_in_sync == 1:
        return {k: tf.constant(a) for k, a in arrays.items()}
    local = len(strategy.extended.worker_devices)
    per = len(batch.images) // local

    def value_fn(ctx: tf.distribute.ValueContext) -> dict:
        k = ctx.replica_id_in_sync_group % local
        return {name: tf.constant(a[k * per:(k + 1) * per]) for name, a in arrays.items()}

    return strategy.experimental_distribute_values_from_function(value_fn)
