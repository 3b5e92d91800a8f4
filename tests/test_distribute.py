"""Strategy choice, worker shard, precision policies and splitting a batch over replicas (one device here;
tests/test_distributed.py runs two)."""

import keras
import numpy as np
import pytest

from ssd.engine.recipe import PRECISIONS
from ssd.data.pipeline import Batch
from ssd.engine.distribute import POLICIES, check_batch_size, distribute_batch, make_strategy, precision_policy, worker_shard


def test_default_strategy_is_one_chief_worker():
    strategy = make_strategy("default")
    assert worker_shard(strategy) == (0, 1, True)
    with pytest.raises(ValueError, match="strategy must be one of"):
        make_strategy("parameter_server")


def test_every_precision_has_its_keras_policy():
    assert POLICIES == {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}
    assert tuple(POLICIES) == PRECISIONS


def test_precision_policy_is_scoped():
    before = keras.mixed_precision.global_policy().name
    with precision_policy("bfloat16"):
        assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
        layer = keras.layers.Dense(2)
    assert keras.mixed_precision.global_policy().name == before
    assert layer.compute_dtype == "bfloat16"
    with pytest.raises(ValueError, match="mixed_precision"):
        with precision_policy("float8"):
            pass


def test_one_device_gets_the_arrays_of_the_batch_by_name():
    rng = np.random.default_rng(0)
    batch = Batch(images=rng.integers(0, 256, (2, 4, 4, 3), dtype=np.uint8),
                  boxes=rng.uniform(0, 1, (2, 3, 4)).astype(np.float32),
                  labels=np.array([[1, 2, 0], [3, 0, 0]], np.int32), counts=np.array([2, 1], np.int32),
                  indices=np.array([5, 7], np.int32), epoch=1, index=4)
    tensors = distribute_batch(make_strategy("default"), batch)
    expected = {"images": batch.images, "boxes": batch.boxes, "labels": batch.labels, "counts": batch.counts,
                "indices": batch.indices}
    assert list(tensors) == list(expected)
    for name, array in expected.items():
        assert tensors[name].dtype.as_numpy_dtype == array.dtype
        np.testing.assert_array_equal(tensors[name].numpy(), array)


def test_batch_size_must_split_over_the_replicas():
    check_batch_size(3, make_strategy("default").num_replicas_in_sync)  # one replica takes any batch
    check_batch_size(8, 4)
    with pytest.raises(ValueError, match=r"batch_size 6 must be divisible by the number of replicas \(4\)"):
        check_batch_size(6, 4)
