"""The shared-memory batch ring against an in-process reference: content, order, failures, cleanup.

Workers unpickle the transforms below by importing this module, so it must not import TensorFlow
at the top (tests that need it import it inside).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from ssd.image_io import read_rgb
from ssd.data.pipeline import (
    Batch,
    BatchPipeline,
    PipelineError,
    as_tf_dataset,
    epoch_order,
    sample_rng,
)
from ssd.records import Sample

TESTS = Path(__file__).resolve().parent
SIZE = 16


# ---------------------------------------------------------------- fixtures and test transforms


def write_samples(folder: Path, count: int, bad: int | None = None) -> list[Sample]:
    """`count` small JPEGs of varied sizes with 1..4 boxes each ("xyxy" pixels, labels 1..3)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(123)
    samples = []
    for i in range(count):
        w, h = 24 + 2 * (i % 5), 20 + 3 * (i % 4)
        path = folder / f"img{i:03d}.jpg"
        if i == bad:
            path.write_bytes(b"not a jpeg at all")
        else:
            cv2.imwrite(str(path), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        n = 1 + i % 4
        xy = rng.uniform(0, 10, (n, 2)).astype(np.float32)
        boxes = np.concatenate([xy, xy + rng.uniform(3, 10, (n, 2)).astype(np.float32)], 1)
        samples.append(Sample(f"img{i:03d}", str(path), w, h, boxes,
                              (np.arange(n) % 3 + 1).astype(np.int32), np.zeros(n, bool)))
    return samples


class JitterResize:
    """Resize to SIZE, add an rng-drawn brightness offset, boxes to "rel_xyxy"."""

    def __init__(self, copies: int = 1, delay: float = 0.0, fail_width: int | None = None):
        self.copies, self.delay, self.fail_width = copies, delay, fail_width

    def __call__(self, image, boxes, labels, rng):
        h, w = image.shape[:2]
        if w == self.fail_width:
            raise ValueError(f"boom: refusing width {w}")
        time.sleep(self.delay)
        out = cv2.resize(image, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
        out = np.clip(out.astype(np.int16) + int(rng.integers(0, 64)), 0, 255).astype(np.uint8)
        rel = (boxes / np.array([w, h, w, h], np.float32)).astype(np.float32)
        return out, np.tile(rel, (self.copies, 1)), np.tile(labels, self.copies)


class Marking:
    """JitterResize that first appends its pid to `log` (one line per image begun), then sleeps."""

    def __init__(self, log: str, delay: float):
        self.log, self.delay, self.inner = log, delay, JitterResize()

    def __call__(self, image, boxes, labels, rng):
        with open(self.log, "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(self.delay)
        return self.inner(image, boxes, labels, rng)


class ModuleProbe:
    """Labels every box 7 if the worker has TensorFlow in sys.modules, else 3."""

    def __call__(self, image, boxes, labels, rng):
        image = cv2.resize(image, (SIZE, SIZE))
        label = 7 if "tensorflow" in sys.modules else 3
        return image, np.zeros((1, 4), np.float32), np.array([label], np.int32)


def reference_batches(samples, transform, batch_size, seed, epoch, shuffle=True, drop=False):
    """What the pipeline must deliver, computed in this process without any worker."""
    order = epoch_order(len(samples), seed, epoch, shuffle)
    stop = len(order) - len(order) % batch_size if drop else len(order)
    out = []
    for start in range(0, stop, batch_size):
        idx = order[start:start + batch_size]
        results = [transform(read_rgb(samples[i].image_path), samples[i].boxes, samples[i].labels,
                             sample_rng(seed, epoch, int(i))) for i in idx]
        out.append((idx, results))
    return out


def assert_matches(batch: Batch, expected, max_boxes: int) -> None:
    """One delivered batch equals the reference, padding included."""
    idx, results = expected
    np.testing.assert_array_equal(batch.indices, idx)
    assert batch.images.shape == (len(idx), SIZE, SIZE, 3) and batch.images.dtype == np.uint8
    assert batch.boxes.shape == (len(idx), max_boxes, 4) and batch.boxes.dtype == np.float32
    assert batch.labels.shape == (len(idx), max_boxes) and batch.labels.dtype == np.int32
    for row, (image, boxes, labels) in enumerate(results):
        n = min(len(boxes), max_boxes)
        assert batch.counts[row] == n
        np.testing.assert_array_equal(batch.images[row], image)
        np.testing.assert_array_equal(batch.boxes[row, :n], boxes[:n])
        np.testing.assert_array_equal(batch.labels[row, :n], labels[:n])
        assert not batch.boxes[row, n:].any() and not batch.labels[row, n:].any()


def shm_exists(name: str) -> bool:
    return os.path.exists(f"/dev/shm/{name}")


def process_alive(pid: int) -> bool:
    """True unless the process is gone or a zombie (a container's init may not reap orphans)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_until(predicate, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def assert_cleaned_up(pids: list[int], segments: list[str]) -> None:
    assert pids and segments
    assert not [s for s in segments if shm_exists(s)], "shared-memory segments leaked"
    assert wait_until(lambda: not any(process_alive(p) for p in pids)), "worker processes left"


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> list[Sample]:
    return write_samples(tmp_path_factory.mktemp("pipeline"), 10)


@pytest.fixture
def alarm():
    """Fail instead of hanging if a pipeline never notices a failure."""
    def on_alarm(*_):
        raise TimeoutError("pipeline did not report the failure within 30 s")
    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(30)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


# ---------------------------------------------------------------- content, order, determinism


def test_epoch_order_is_a_seeded_permutation():
    a = epoch_order(50, seed=1, epoch=0, shuffle=True)
    assert sorted(a) == list(range(50))
    np.testing.assert_array_equal(a, epoch_order(50, seed=1, epoch=0, shuffle=True))
    assert not np.array_equal(a, epoch_order(50, seed=1, epoch=1, shuffle=True))
    assert not np.array_equal(a, epoch_order(50, seed=2, epoch=0, shuffle=True))
    np.testing.assert_array_equal(epoch_order(5, seed=1, epoch=3, shuffle=False), np.arange(5))


def test_sample_rng_depends_on_seed_epoch_and_index_only():
    draw = lambda *key: sample_rng(*key).integers(0, 2**32, 4).tolist()  # noqa: E731
    assert draw(0, 1, 2) == draw(0, 1, 2)
    assert len({tuple(draw(*k)) for k in [(0, 1, 2), (0, 1, 3), (0, 2, 2), (1, 1, 2)]}) == 4


def test_every_sample_once_partial_last_batch_padding_and_reshuffle(samples):
    transform = JitterResize()
    with BatchPipeline(samples, transform, batch_size=4, image_size=SIZE, max_boxes=6,
                       num_workers=2, seed=5) as pipe:
        assert len(pipe) == 3
        for epoch in (0, 1, 0):  # epoch 0 twice: the same pipeline reproduces it exactly
            batches = [b.copy() for b in pipe.epoch(epoch)]
            expected = reference_batches(samples, transform, 4, 5, epoch)
            assert [len(b.indices) for b in batches] == [4, 4, 2]
            assert sorted(np.concatenate([b.indices for b in batches])) == list(range(10))
            assert [b.index for b in batches] == [0, 1, 2] and {b.epoch for b in batches} == {epoch}
            for batch, exp in zip(batches, expected):
                assert_matches(batch, exp, max_boxes=6)
        assert pipe.truncated == 0


FORK_SCRIPT = """
import warnings
{extra_import}
from pathlib import Path
import test_pipeline as t
samples = t.write_samples(Path({folder!r}), 8)
{body}
print("ok")
"""


def run_fresh(tmp_path: Path, body: str, extra_import: str = "") -> None:
    """Run `body` in a new interpreter: forking is only safe where TensorFlow never ran.

    Under pytest-xdist this process may already have run TensorFlow ops (other test files),
    and a fork then inherits locked mutexes of its thread pools.
    """
    script = tmp_path / "fresh.py"
    script.write_text(FORK_SCRIPT.format(folder=str(tmp_path),
                                         extra_import=extra_import, body=body))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(TESTS))  # the script imports this module
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr


def test_fork_start_method_gives_the_same_batches(tmp_path):
    run_fresh(tmp_path, """
transform = t.JitterResize()
expected = t.reference_batches(samples, transform, 3, 9, epoch=2)
with t.BatchPipeline(samples, transform, batch_size=3, image_size=t.SIZE, max_boxes=4,
                     num_workers=2, seed=9, start_method="fork") as pipe:
    batches = list(pipe.epoch(2, copy=True))
assert len(batches) == len(expected) == 3
for batch, exp in zip(batches, expected):
    t.assert_matches(batch, exp, max_boxes=4)
""")


@pytest.mark.parametrize("num_workers, start_method", [(1, "spawn"), (3, "forkserver")])
def test_batches_do_not_depend_on_workers_or_start_method(samples, num_workers, start_method):
    transform = JitterResize()
    expected = reference_batches(samples, transform, 3, 9, epoch=2)
    with BatchPipeline(samples, transform, batch_size=3, image_size=SIZE, max_boxes=4,
                       num_workers=num_workers, seed=9, start_method=start_method) as pipe:
        batches = list(pipe.epoch(2, copy=True))
    assert len(batches) == len(expected) == 4
    for batch, exp in zip(batches, expected):
        assert_matches(batch, exp, max_boxes=4)


def test_drop_remainder_and_no_shuffle(samples):
    transform = JitterResize()
    with BatchPipeline(samples, transform, batch_size=4, image_size=SIZE, num_workers=1,
                       shuffle=False, drop_remainder=True) as pipe:
        batches = list(pipe.epoch(0, copy=True))
    assert len(batches) == 2
    np.testing.assert_array_equal(np.concatenate([b.indices for b in batches]), np.arange(8))
    for batch, exp in zip(batches, reference_batches(samples, transform, 4, 0, 0, False, True)):
        assert_matches(batch, exp, max_boxes=100)


def test_views_share_one_slot_copies_do_not_and_epochs_restart_cleanly(samples):
    with BatchPipeline(samples, JitterResize(), batch_size=2, image_size=SIZE, num_workers=1,
                       num_slots=1) as pipe:
        views = list(pipe.epoch(0))  # one slot: every view is the same memory, no hidden copy
        assert all(np.shares_memory(v.images, views[0].images) for v in views)
        copies = list(pipe.epoch(0, copy=True))
        assert not any(np.shares_memory(c.images, views[0].images) for c in copies)
        # the reused slot is re-padded: rows with fewer boxes than the previous batch are zeroed
        for batch, exp in zip(copies, reference_batches(samples, JitterResize(), 2, 0, 0)):
            assert_matches(batch, exp, max_boxes=100)
        # leave an epoch early, start another while the first is suspended, then a full one
        for _ in pipe.epoch(1):
            break
        suspended = pipe.epoch(1)
        next(suspended)
        fresh = [b.copy() for b in pipe.epoch(1)]
        with pytest.raises(RuntimeError, match="later epoch"):
            next(suspended)
        again = list(pipe.epoch(1, copy=True))
        resumed = list(pipe.epoch(1, copy=True, start=3))  # mid-epoch resume
    assert [c.indices.tolist() for c in fresh] == [c.indices.tolist() for c in again]
    for f, a in zip(fresh, again):
        np.testing.assert_array_equal(f.images, a.images)
    assert [r.index for r in resumed] == [3, 4]
    for r, a in zip(resumed, again[3:]):
        np.testing.assert_array_equal(r.indices, a.indices)
        np.testing.assert_array_equal(r.images, a.images)


def test_more_boxes_than_max_boxes_are_truncated_and_reported(samples):
    # JitterResize(copies=3) turns sample i's 1 + i % 4 boxes into 3 * (1 + i % 4); max_boxes=6
    # truncates those with 3 or 4 boxes (i % 4 in {2, 3}): samples 2, 3, 6, 7.
    transform = JitterResize(copies=3)
    with BatchPipeline(samples, transform, batch_size=5, image_size=SIZE, max_boxes=6,
                       num_workers=1, seed=1) as pipe:
        with pytest.warns(RuntimeWarning, match=r"img00[2367].*max_boxes=6") as record:
            batches = list(pipe.epoch(0, copy=True))
        assert pipe.truncated == 4
    assert len([w for w in record if "max_boxes" in str(w.message)]) == 1
    for batch, exp in zip(batches, reference_batches(samples, transform, 5, 1, 0)):
        assert_matches(batch, exp, max_boxes=6)  # the first max_boxes boxes are kept


def test_as_tf_dataset_copies_out_of_the_reused_slot(samples):
    import tensorflow as tf

    transform = JitterResize()
    with BatchPipeline(samples, transform, batch_size=4, image_size=SIZE, max_boxes=5,
                       num_workers=1, num_slots=1) as pipe:
        elements = list(as_tf_dataset(pipe, epochs=[0, 1]).prefetch(2))
    expected = reference_batches(samples, transform, 4, 0, 0) + reference_batches(
        samples, transform, 4, 0, 1)
    assert len(elements) == len(expected) == 6
    assert elements[0]["images"].dtype == tf.uint8 and elements[2]["images"].shape[0] == 2
    for element, exp in zip(elements, expected):
        batch = Batch(**{k: v.numpy() for k, v in element.items()}, epoch=0, index=0)
        assert_matches(batch, exp, max_boxes=5)


def test_arguments_are_checked(samples):
    with pytest.raises(ValueError, match="batch_size"):
        BatchPipeline(samples, JitterResize(), batch_size=0, image_size=SIZE)
    with pytest.raises(ValueError, match="start_method"):
        BatchPipeline(samples, JitterResize(), batch_size=2, image_size=SIZE, start_method="vfork")
    with pytest.raises(ValueError, match="samples is empty"):
        BatchPipeline([], JitterResize(), batch_size=2, image_size=SIZE)


# ---------------------------------------------------------------- failures and cleanup


def test_worker_exception_surfaces_with_traceback_and_sample(samples, alarm):
    pipe = BatchPipeline(samples, JitterResize(fail_width=28), batch_size=2, image_size=SIZE,
                         num_workers=2)  # widths are 24 + 2 * (i % 5): img002 and img007 fail
    pids, segments = pipe.worker_pids, pipe.segment_names
    with pytest.raises(PipelineError) as info:
        with pipe:
            list(pipe.epoch(0))
    message = str(info.value)
    assert "Traceback" in message and "boom: refusing width 28" in message
    assert "img002" in message or "img007" in message
    assert pipe.closed
    assert_cleaned_up(pids, segments)


def test_unreadable_image_stops_the_epoch_when_not_skipping(tmp_path, alarm):
    bad = write_samples(tmp_path, 4, bad=1)
    with pytest.raises(PipelineError, match=r"img001.*img001\.jpg"):
        with BatchPipeline(bad, JitterResize(), batch_size=2, image_size=SIZE, num_workers=1,
                           skip_unreadable=False) as p:
            list(p.epoch(0))


def test_unreadable_image_leaves_a_blank_row_counted_and_named_once(tmp_path, alarm):
    bad = write_samples(tmp_path, 6, bad=3)
    transform = JitterResize()
    with pytest.warns(RuntimeWarning, match=r"skipped image 'img003'.*img003\.jpg") as caught:
        with BatchPipeline(bad, transform, batch_size=4, image_size=SIZE, num_workers=2, seed=5) as pipe:
            epochs = [[b.copy() for b in pipe.epoch(e)] for e in (0, 1)]
    assert sum("img003" in str(w.message) for w in caught) == 1  # named once, not every epoch
    assert pipe.skipped == 2 and list(pipe.unreadable) == ["img003"]
    for e, batches in enumerate(epochs):
        expected = reference_batches([s if i != 3 else bad[0] for i, s in enumerate(bad)], transform,
                                     4, seed=5, epoch=e)
        assert sum(len(b.indices) for b in batches) == 6  # the batch keeps its size
        for batch, (idx, results) in zip(batches, expected):
            for row, (i, (image, boxes, labels)) in enumerate(zip(idx, results)):
                if i == 3:  # the row is blank: nothing for the loss
                    assert batch.indices[row] == -1 and batch.counts[row] == 0
                    assert not batch.images[row].any() and not batch.boxes[row].any() and not batch.labels[row].any()
                else:
                    assert batch.indices[row] == i
                    np.testing.assert_array_equal(batch.images[row], image)
                    np.testing.assert_array_equal(batch.boxes[row, :len(boxes)], boxes)


# Where worker 0 is when it is killed: idle (its batch sent, no free slot to fill: the parent's next
# send to it hits a closed pipe), or at the 1st / 2nd / 3rd image of its second batch of 3 while the
# consumer waits for batches.
@pytest.mark.parametrize("point", ["idle", 1, 2, 3])
def test_killed_worker_is_reported_wherever_it_was(samples, tmp_path, point, alarm):
    log = tmp_path / "begun.log"
    idle = point == "idle"
    pipe = BatchPipeline(samples, Marking(str(log), delay=0.0 if idle else 0.3), batch_size=3, image_size=SIZE,
                         num_workers=2, num_slots=2 if idle else 3, shuffle=False)
    victim = pipe.worker_pids[0]

    def begun(pid: int | None = victim) -> int:
        words = log.read_text().split() if log.exists() else []
        return len(words) if pid is None else words.count(str(pid))

    def kill() -> None:
        if idle:  # both workers have sent their batch and no slot is free for another
            assert wait_until(lambda: begun() == 3 and begun(None) == 6)
            time.sleep(0.2)
        else:  # worker 0 was given batches 0 and 2 at once
            assert wait_until(lambda: begun() >= 3 + point)
        os.kill(victim, signal.SIGKILL)
        assert wait_until(lambda: not process_alive(victim))

    with pytest.raises(PipelineError) as info:
        with pipe:
            batches = pipe.epoch(0)
            next(batches)  # batch 0, made by worker 0
            killer = threading.Thread(target=kill)
            killer.start()
            if idle:
                killer.join()
            for _ in batches:
                time.sleep(0.01)
    killer.join()
    assert f"worker 0 (pid {victim}) died, killed by SIGKILL" in str(info.value), info.value


def test_killed_worker_is_detected(samples, alarm):
    pipe = BatchPipeline(samples, JitterResize(delay=0.05), batch_size=2, image_size=SIZE,
                         num_workers=2)
    pids, segments = pipe.worker_pids, pipe.segment_names
    with pytest.raises(PipelineError, match=rf"pid {pids[0]}\) died, killed by SIGKILL"):
        with pipe:
            for batch in pipe.epoch(0):
                if batch.index == 0:
                    os.kill(pids[0], signal.SIGKILL)
    assert_cleaned_up(pids, segments)


@pytest.mark.parametrize("error", [KeyboardInterrupt, ZeroDivisionError])
def test_consumer_exception_stops_workers_and_unlinks_segments(samples, error):
    pipe = BatchPipeline(samples, JitterResize(), batch_size=2, image_size=SIZE, num_workers=2)
    pids, segments = pipe.worker_pids, pipe.segment_names
    assert all(shm_exists(s) for s in segments) and all(process_alive(p) for p in pids)
    with pytest.raises(error):
        with pipe:
            for batch in pipe.epoch(0):
                if batch.index == 1:
                    kept = batch
                    raise error()
    assert_cleaned_up(pids, segments)
    # views kept past close() stay readable (stale) instead of pointing at unmapped memory
    assert kept.images.shape == (2, SIZE, SIZE, 3) and int(kept.images.sum()) >= 0


def test_close_from_another_thread_ends_a_waiting_iterator(samples, alarm):
    # as when a tf.data prefetch thread is inside the pipeline while the main thread closes it
    pipe = BatchPipeline(samples, JitterResize(delay=0.2), batch_size=5, image_size=SIZE,
                         num_workers=1)
    outcome = []

    def consume():
        try:
            list(pipe.epoch(0))
        except PipelineError as error:
            outcome.append(str(error))

    thread = threading.Thread(target=consume)
    thread.start()
    time.sleep(0.3)
    pipe.close()
    thread.join(10)
    assert not thread.is_alive() and outcome and "closed" in outcome[0]


SCRIPT = """
import json, time
{extra_import}
from pathlib import Path
from ssd.data.pipeline import BatchPipeline
from test_pipeline import {transform}, write_samples

samples = write_samples(Path({folder!r}), 6)
with BatchPipeline(samples, {transform}(), batch_size=2, image_size=16, num_workers=2) as pipe:
    print(json.dumps({{"pids": pipe.worker_pids, "segments": pipe.segment_names}}), flush=True)
    for epoch in range({epochs}):
        for batch in pipe.epoch(epoch):
            print(json.dumps(sorted(set(batch.labels[batch.labels > 0].tolist()))), flush=True)
            time.sleep(0.01)
"""


def run_script(tmp_path: Path, transform: str, epochs: int, extra_import: str = "") -> subprocess.Popen:
    script = tmp_path / "consumer.py"
    script.write_text(SCRIPT.format(folder=str(tmp_path),
                                    transform=transform, epochs=epochs, extra_import=extra_import))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(TESTS))  # the script imports this module
    return subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_interrupted_or_killed_consumer_process_leaves_nothing_behind(tmp_path, sig):
    # SIGINT: KeyboardInterrupt unwinds the with-block. SIGKILL: nothing runs in the consumer;
    # the workers notice their parent is gone and exit, the resource tracker unlinks segments.
    proc = run_script(tmp_path, "JitterResize", epochs=10**6)
    try:
        started = json.loads(proc.stdout.readline())
        proc.stdout.readline()  # a first batch arrived
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert_cleaned_up(started["pids"], started["segments"])
    if sig == signal.SIGINT:
        assert proc.returncode != 0 and "KeyboardInterrupt" in stderr
        assert "leaked" not in stderr and "resource_tracker" not in stderr, stderr


def test_spawned_workers_do_not_import_the_scripts_tensorflow(tmp_path):
    proc = run_script(tmp_path, "ModuleProbe", epochs=1, extra_import="import tensorflow")
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    labels = [json.loads(line) for line in stdout.splitlines()[1:]]
    assert labels == [[3]] * 3  # 7 would mean a worker had tensorflow in sys.modules
    assert "resource_tracker" not in stderr, stderr


def test_module_probe_sees_tensorflow_in_a_forked_worker(tmp_path):
    # Forked workers inherit the parent's modules: the probe must notice, and the pipeline warn.
    run_fresh(tmp_path, """
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    pipe = t.BatchPipeline(samples[:2], t.ModuleProbe(), batch_size=2, image_size=t.SIZE,
                           num_workers=1, start_method="fork")
assert any("fork" in str(w.message) for w in caught), caught
with pipe:
    (batch,) = list(pipe.epoch(0))
assert batch.labels[:, 0].tolist() == [7, 7], batch.labels
""", extra_import="import tensorflow")


def test_batch_layout_names_the_arrays_and_copy_owns_them():
    layout = Batch.layout(2, SIZE, 3)
    assert [(name, dtype.name, shape) for name, dtype, shape in layout] == [
        ("images", "uint8", (2, SIZE, SIZE, 3)), ("boxes", "float32", (2, 3, 4)), ("labels", "int32", (2, 3)),
        ("counts", "int32", (2,)), ("indices", "int32", (2,))]
    arrays = {name: np.ones(shape, dtype) for name, dtype, shape in layout}
    batch = Batch(**arrays, epoch=1, index=2)
    assert list(batch.arrays()) == [name for name, _, _ in layout]
    copy = batch.copy()
    assert (copy.epoch, copy.index) == (1, 2)
    for name, array in copy.arrays().items():
        np.testing.assert_array_equal(array, arrays[name])
        assert not np.shares_memory(array, arrays[name])


def test_segments_are_allocated_when_created_so_a_full_dev_shm_cannot_kill_a_worker_later(samples):
    """A sparse segment costs no /dev/shm until written: a worker writing into a page a full /dev/shm
    cannot provide dies by SIGBUS. Every page is reserved at creation instead (or refused then)."""
    with BatchPipeline(samples, JitterResize(), batch_size=4, image_size=64, num_workers=1) as pipe:
        for name in pipe.segment_names:
            info = os.stat(f"/dev/shm/{name.lstrip('/')}")
            assert info.st_blocks * 512 >= info.st_size > 4 * 64 * 64 * 3, (name, info.st_blocks, info.st_size)


def test_a_worker_killed_by_sigbus_is_reported_with_dev_shm_sizes_and_the_docker_flag(samples, alarm):
    pipe = BatchPipeline(samples, JitterResize(delay=0.05), batch_size=2, image_size=SIZE, num_workers=2)
    pids = pipe.worker_pids
    with pytest.raises(PipelineError) as info:
        with pipe:
            for batch in pipe.epoch(0):
                if batch.index == 0:
                    os.kill(pids[0], signal.SIGBUS)
    message = str(info.value)
    assert f"pid {pids[0]}) died, killed by SIGBUS" in message and "\n" not in message
    assert re.search(r"\(SIGBUS: /dev/shm \(\d+ MB free of \d+ MB\) cannot hold the batch ring of \d+ MB: .*"
                     r"in Docker raise --shm-size", message), message
