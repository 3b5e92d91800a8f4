"""Multiprocessing input pipeline: worker processes fill a ring of shared-memory batch slots.

Worker processes decode a sample's JPEG (`ssd.image_io.read_rgb`), run the transform
(`(image uint8 [H, W, 3] RGB, boxes float32 [N, 4] "xyxy", labels int32 [N], rng) ->
(image uint8 [S, S, 3], boxes float32 [M, 4] "rel_xyxy", labels int32 [M])`) and write the
result straight into one slot of a ring of POSIX shared-memory segments. A slot holds one batch:

    images   uint8   [B, S, S, 3]  RGB
    boxes    float32 [B, max_boxes, 4]  "rel_xyxy", rows past counts[i] are zero
    labels   int32   [B, max_boxes]  class ids 1..C, 0 = padding
    counts   int32   [B]  number of real boxes per image
    indices  int32   [B]  position of each image in `samples`

Only small control messages (run, epoch, batch index, slot index) cross the pipes; pixels are
never pickled. The consumer gets NumPy views of the slot, valid until it asks for the next
batch, leaves the loop or closes the pipeline (then the slot is reused); `copy=True` hands out
owned arrays instead. The last, partial batch of an epoch is delivered with its real size B'
(every array sliced to B'), unless `drop_remainder=True` drops it.

Determinism: the epoch order comes from (seed, epoch) and every sample's augmentation RNG from
(seed, epoch, sample index), so batches do not depend on the number of workers or on which
worker finished first; batches arrive in order 0, 1, 2, ...

Failure policy: an image that cannot be decoded (corrupt on disk past the dataset source's cheap
check at load) leaves its row blank (zero pixels, no boxes, index -1: it adds nothing to the
loss), is counted in `skipped` and named in a warning, unless `skip_unreadable=False`, which
stops the epoch like any other exception in a worker: `PipelineError` in the consumer with the
worker's traceback and the sample's id and path. A worker that dies (e.g. SIGKILL) is reported
as `PipelineError` "worker N ... died, killed by SIGKILL" whichever pipe or sentinel notices
first (a send to it included), its exit code read after reaping it. Any exception or Ctrl-C stops
the workers and unlinks every segment; workers also exit when their parent dies.

This module must not import TensorFlow (the workers import it): `as_tf_dataset` imports it lazily.
"""

from __future__ import annotations

import contextlib
import errno
import multiprocessing as mp
import multiprocessing.connection
import os
import pickle
import secrets
import signal
import sys
import traceback
import types
import warnings
import weakref
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from multiprocessing import shared_memory
from typing import Any, Callable, NamedTuple, NoReturn

import numpy as np

from ssd.image_io import read_rgb
from ssd.records import Sample

SEGMENT_PREFIX = "ssd_ring_"
# Tags keep the shuffle stream and the per-sample streams apart for the same (seed, epoch).
_SHUFFLE_STREAM = 0
_SAMPLE_STREAM = 1
# Tasks queued per worker: one running plus one waiting, so a worker never idles on a round trip.
_TASKS_PER_WORKER = 2
_PARENT_POLL_SECONDS = 0.5
_JOIN_SECONDS = 2.0
_ALIGN = 64

Transform = Callable[
    [np.ndarray, np.ndarray, np.ndarray, np.random.Generator],
    tuple[np.ndarray, np.ndarray, np.ndarray],
]


class PipelineError(RuntimeError):
    """A worker failed or died; the message carries its traceback and the sample it was on."""


class _Superseded(RuntimeError):
    """An epoch iterator resumed after a later epoch() call took over the ring."""


# Control messages between the parent and the workers (small; pixels stay in shared memory).
class _Task(NamedTuple):
    """Parent -> worker: fill `slot` with batch `batch_index` of `epoch` (of consumer run `run`)."""

    run: int
    epoch: int
    batch_index: int
    slot: int


class _Done(NamedTuple):
    """Worker -> parent: the task's slot is filled; `truncated` lists (image id, box count),
    `skipped` (image id, reason) for the images left blank because they could not be decoded."""

    task: _Task
    truncated: list[tuple[str, int]]
    skipped: list[tuple[str, str]]


class _Failed(NamedTuple):
    """Worker -> parent: the task failed on one sample, with the worker's traceback."""

    task: _Task
    image_id: str
    image_path: str
    traceback: str


class _Stopped(NamedTuple):
    """Worker -> parent: the task was abandoned because the pipeline is stopping."""

    task: _Task


@dataclass(frozen=True, eq=False)
class Batch:
    """One batch, as views into a shared-memory slot (or owned arrays after `copy()`).

    Attributes:
        images: uint8 [B, S, S, 3], RGB.
        boxes: float32 [B, max_boxes, 4], "rel_xyxy", zero past counts[i].
        labels: int32 [B, max_boxes], class ids 1..C, 0 = padding.
        counts: int32 [B], real boxes per image.
        indices: int32 [B], position of each image in the pipeline's samples; -1 for a row left
            blank because its image could not be decoded.
        epoch, index: which epoch and which batch of it (0-based).
    """

    images: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    counts: np.ndarray
    indices: np.ndarray
    epoch: int
    index: int

    @staticmethod
    def layout(batch_size: int | None, image_size: int, max_boxes: int) -> list[tuple[str, np.dtype, tuple]]:
        """(name, dtype, shape) of each array, in field order: the one statement of the layout."""
        b, s, m = batch_size, image_size, max_boxes
        return [("images", np.dtype(np.uint8), (b, s, s, 3)),
                ("boxes", np.dtype(np.float32), (b, m, 4)),
                ("labels", np.dtype(np.int32), (b, m)),
                ("counts", np.dtype(np.int32), (b,)),
                ("indices", np.dtype(np.int32), (b,))]

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays by name, in `layout` order (what a training step or tf.data takes)."""
        return {name: getattr(self, name) for name in _ARRAY_NAMES}

    def copy(self) -> Batch:
        """The same batch in owned arrays that stay valid after the slot is reused."""
        return replace(self, **{k: v.copy() for k, v in self.arrays().items()})


_ARRAY_NAMES = tuple(name for name, _, _ in Batch.layout(0, 0, 0))


@dataclass(frozen=True)
class _SlotLayout:
    """Byte offsets of the five arrays inside one slot segment."""

    batch_size: int
    image_size: int
    max_boxes: int

    def fields(self) -> list[tuple[str, np.dtype, tuple[int, ...]]]:
        return Batch.layout(self.batch_size, self.image_size, self.max_boxes)

    def offsets(self) -> tuple[list[int], int]:
        """Start of each field (64-byte aligned) and the total size in bytes."""
        starts, end = [], 0
        for _, dtype, shape in self.fields():
            start = -(-end // _ALIGN) * _ALIGN
            starts.append(start)
            end = start + dtype.itemsize * int(np.prod(shape))
        return starts, end

    def views(self, buffer: memoryview) -> dict[str, np.ndarray]:
        """NumPy views of the slot's arrays on `buffer` (no copy)."""
        starts, _ = self.offsets()
        return {name: np.ndarray(shape, dtype, buffer=buffer, offset=start)
                for (name, dtype, shape), start in zip(self.fields(), starts)}


class _Segment(shared_memory.SharedMemory):
    """A slot segment whose close() never unmaps memory under NumPy views a consumer still holds."""

    def close(self) -> None:
        # NumPy views keep the mmap object as their base without holding a buffer export, so
        # SharedMemory.close() (mmap.close()) would unmap under them and reading a kept Batch
        # would segfault. Dropping our reference instead unmaps when the last view dies.
        if self._buf is not None:
            self._buf.release()
            self._buf = None
        self._mmap = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


@dataclass(frozen=True)
class _WorkerSpec:
    """Everything a worker needs, pickled once when it starts."""

    samples: tuple[Sample, ...]
    transform: Transform
    layout: _SlotLayout
    segment_names: tuple[str, ...]
    seed: int
    shuffle: bool
    skip_unreadable: bool


def epoch_order(num_samples: int, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    """int64 [num_samples]: the order samples are visited in `epoch` (a permutation)."""
    if not shuffle:
        return np.arange(num_samples)
    return np.random.default_rng([_SHUFFLE_STREAM, seed, epoch]).permutation(num_samples)


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The augmentation RNG of sample `index` in `epoch`, independent of worker and schedule."""
    return np.random.default_rng([_SAMPLE_STREAM, seed, epoch, index])


# --------------------------------------------------------------------------------------------
# Worker side


def _attach(name: str) -> shared_memory.SharedMemory:
    """Open an existing segment; the parent owns (and unlinks) it."""
    if sys.version_info >= (3, 13):
        return shared_memory.SharedMemory(name, track=False)
    # Before 3.13 attaching registers the name with the shared resource tracker too; the
    # tracker keeps a set, so the parent's single unlink still unregisters it cleanly.
    return shared_memory.SharedMemory(name)


def _write_sample(slot: dict[str, np.ndarray], j: int, result: Any,
                  layout: _SlotLayout, transform: Transform) -> int:
    """Copy one transform result into row j of the slot; returns its box count before truncation."""
    if not (isinstance(result, tuple) and len(result) == 3):
        raise TypeError(f"transform {type(transform).__name__} must return (image, boxes, labels), "
                        f"got {type(result).__name__}")
    image, boxes, labels = result
    s, m = layout.image_size, layout.max_boxes
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.shape != (s, s, 3):
        raise ValueError(f"transform {type(transform).__name__} returned image "
                         f"{getattr(image, 'dtype', type(image))} {np.shape(image)}, "
                         f"expected uint8 ({s}, {s}, 3)")
    boxes, labels = np.asarray(boxes, np.float32), np.asarray(labels, np.int32)
    n = len(boxes)
    if boxes.shape != (n, 4) or labels.shape != (n,):
        raise ValueError(f"transform {type(transform).__name__} returned boxes {boxes.shape} and "
                         f"labels {labels.shape}, expected [N, 4] and [N]")
    kept = min(n, m)
    slot["images"][j] = image
    slot["boxes"][j, :kept] = boxes[:kept]
    slot["boxes"][j, kept:] = 0.0
    slot["labels"][j, :kept] = labels[:kept]
    slot["labels"][j, kept:] = 0
    slot["counts"][j] = kept
    return n


def _fill_batch(task: _Task, order: np.ndarray, spec: _WorkerSpec,
                slots: list[dict[str, np.ndarray]], stop: Any) -> _Done | _Failed | _Stopped:
    """Decode and transform one batch into its slot; returns the control message for the parent."""
    b = spec.layout.batch_size
    slot, truncated, skipped = slots[task.slot], [], []
    for j, i in enumerate(order[task.batch_index * b:(task.batch_index + 1) * b]):
        if stop.is_set():
            return _Stopped(task)
        sample = spec.samples[i]
        try:
            image = read_rgb(sample.image_path)
        except ValueError as err:
            if not spec.skip_unreadable:
                return _Failed(task, sample.image_id, sample.image_path, traceback.format_exc())
            _blank_row(slot, j)
            skipped.append((sample.image_id, str(err)))
            continue
        try:
            result = spec.transform(image, sample.boxes, sample.labels,
                                    sample_rng(spec.seed, task.epoch, int(i)))
            n = _write_sample(slot, j, result, spec.layout, spec.transform)
        except Exception:
            return _Failed(task, sample.image_id, sample.image_path, traceback.format_exc())
        slot["indices"][j] = i
        if n > spec.layout.max_boxes:
            truncated.append((sample.image_id, n))
    return _Done(task, truncated, skipped)


def _blank_row(slot: dict[str, np.ndarray], j: int) -> None:
    """Row j as a skipped image: zero pixels, no boxes (so no loss), index -1."""
    slot["images"][j] = 0
    slot["boxes"][j] = 0.0
    slot["labels"][j] = 0
    slot["counts"][j] = 0
    slot["indices"][j] = -1


def _worker_main(conn: mp.connection.Connection, stop: Any, spec: _WorkerSpec) -> None:
    """Serve tasks from `conn` until told to stop, the parent goes away or the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    with contextlib.suppress(ImportError):
        import cv2  # processes are the unit of parallelism; OpenCV's own threads only contend

        cv2.setNumThreads(1)
    parent = os.getppid()
    segments = [_attach(name) for name in spec.segment_names]
    slots = [spec.layout.views(seg.buf) for seg in segments]
    orders: dict[int, np.ndarray] = {}  # the current epoch's order, computed once per worker
    try:
        while not stop.is_set():
            if not conn.poll(_PARENT_POLL_SECONDS):
                if os.getppid() != parent:
                    return  # orphaned: the parent died without closing us
                continue
            task = conn.recv()
            if task is None:
                return
            if task.epoch not in orders:
                orders = {task.epoch: epoch_order(len(spec.samples), spec.seed, task.epoch, spec.shuffle)}
            conn.send(_fill_batch(task, orders[task.epoch], spec, slots, stop))
    except (EOFError, OSError):
        return  # the parent closed its end or died
    finally:
        del slots
        for seg in segments:
            with contextlib.suppress(BufferError):
                seg.close()


# --------------------------------------------------------------------------------------------
# Parent side


@contextlib.contextmanager
def _script_hidden_from_workers() -> Iterator[None]:
    """Stop spawn/forkserver from re-importing the user's script (and its TensorFlow) in workers.

    multiprocessing re-imports `__main__` in each child so that functions defined there can be
    unpickled; a training script imports TensorFlow at the top, which would cost every worker
    seconds and hundreds of MB. Workers need nothing from the script unless the transform is
    defined in it, which the caller checks first.
    """
    real_main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = real_main


def _needs_script(transform: Transform) -> bool:
    """Whether `transform` only unpickles in a worker that re-imports the user's script."""
    try:
        with _script_hidden_from_workers():
            pickle.dumps(transform)
        return False
    except Exception:
        pass
    try:
        pickle.dumps(transform)
        return True
    except Exception:
        return False  # not picklable at all: Process.start() reports it


def _shm_free_bytes() -> int | None:
    """Free bytes in /dev/shm (Docker defaults it to 64 MB), or None where there is none."""
    try:
        stat = os.statvfs("/dev/shm")
    except (OSError, AttributeError):
        return None
    return stat.f_bavail * stat.f_frsize


def _reserve(segment: shared_memory.SharedMemory, ring_bytes: int) -> None:
    """Allocate the segment's pages now: a new segment is sparse, and a worker writing into a page
    that /dev/shm has no room for dies by SIGBUS mid-epoch instead of this error at the start."""
    if not hasattr(os, "posix_fallocate") or getattr(segment, "_fd", -1) < 0:
        return  # macOS / Windows: no /dev/shm pages to run out of
    try:
        os.posix_fallocate(segment._fd, 0, segment.size)
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.ENOMEM):
            raise
        raise ValueError(f"BatchPipeline: {_shm_advice(ring_bytes)}") from None


def _shm_advice(ring_bytes: int) -> str:
    """What to do when /dev/shm cannot hold the ring, with its sizes."""
    try:
        stat = os.statvfs("/dev/shm")
        sizes = f"{stat.f_bavail * stat.f_frsize / 2**20:.0f} MB free of {stat.f_blocks * stat.f_frsize / 2**20:.0f} MB"
    except OSError:
        sizes = "size unknown"
    return (f"/dev/shm ({sizes}) cannot hold the batch ring of {ring_bytes / 2**20:.0f} MB: free it (old "
            f"/dev/shm/{SEGMENT_PREFIX}* of killed runs), lower --workers or --batch-size, or in Docker raise "
            f"--shm-size (docker run --shm-size=1g)")


def _describe_exit(exitcode: int | None) -> str:
    """'exit code 1' or 'killed by SIGKILL'."""
    if exitcode is not None and exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit code {exitcode}"


class _Resources:
    """What must be released however the pipeline ends; owned by a weakref.finalize."""

    def __init__(self) -> None:
        self.segments: list[_Segment] = []
        self.processes: list[Any] = []
        self.conns: list[mp.connection.Connection] = []
        self.stop: Any = None

    def release(self) -> None:
        """Unlink the segments first (so /dev/shm is clean even if interrupted), then stop workers."""
        for seg in self.segments:
            with contextlib.suppress(FileNotFoundError):
                seg.unlink()
        if self.stop is not None:
            self.stop.set()
        for conn in self.conns:
            with contextlib.suppress(OSError, ValueError):
                conn.send(None)
        for proc in self.processes:
            proc.join(_JOIN_SECONDS)
        for proc in self.processes:
            if proc.exitcode is None:
                proc.kill()
                proc.join(_JOIN_SECONDS)
        for conn in self.conns:
            conn.close()
        for seg in self.segments:
            seg.close()
        # dropping the Event (also referenced by the Process objects' args) unlinks its semaphores
        self.segments, self.processes, self.conns, self.stop = [], [], [], None


class BatchPipeline:
    """Worker processes decode and transform `samples` into a ring of shared-memory batch slots.

    Use as a context manager (or call close()):

        with BatchPipeline(samples, TrainAugmentation(300), batch_size=32, image_size=300) as pipe:
            for epoch in range(epochs):
                for batch in pipe.epoch(epoch):
                    train_step(batch.images, batch.boxes, batch.labels)   # views: valid until next

    Args:
        samples: the dataset's records; boxes "xyxy" pixels, labels 1..C.
        transform: picklable callable (image uint8 [H, W, 3] RGB, boxes float32 [N, 4] "xyxy",
            labels int32 [N], rng) -> (image uint8 [S, S, 3], boxes float32 [M, 4] "rel_xyxy",
            labels int32 [M]). With spawn/forkserver define it in a module, not in the script.
        batch_size, image_size: B and S of every slot.
        max_boxes: boxes kept per image; more are truncated, warned about once and counted in
            `truncated`.
        skip_unreadable: an image that cannot be decoded leaves its row blank (counted in
            `skipped`, each image named once in a warning); False stops the epoch instead.
        num_workers: worker processes.
        shuffle, seed: epoch order from (seed, epoch); per-sample RNG from (seed, epoch, index).
        drop_remainder: drop the last batch when it is smaller than batch_size.
        num_slots: shared-memory slots in the ring; default 2 * num_workers + 2.
        start_method: 'spawn' (default), 'forkserver' or 'fork' (unsafe once TensorFlow runs
            threads in the parent).
    """

    def __init__(self, samples: Sequence[Sample], transform: Transform, batch_size: int,
                 image_size: int, max_boxes: int = 100, num_workers: int = 2,
                 shuffle: bool = True, seed: int = 0, drop_remainder: bool = False,
                 num_slots: int | None = None, start_method: str | None = None,
                 skip_unreadable: bool = True) -> None:
        samples = tuple(samples)
        num_slots = 2 * num_workers + 2 if num_slots is None else num_slots
        start_method = "spawn" if start_method is None else start_method
        _check_arguments(samples, transform, batch_size, image_size, max_boxes, num_workers,
                         seed, num_slots, start_method)
        self.num_samples, self.batch_size, self.image_size = len(samples), batch_size, image_size
        self.max_boxes, self.num_workers, self.num_slots = max_boxes, num_workers, num_slots
        self.shuffle, self.seed, self.drop_remainder = shuffle, seed, drop_remainder
        self.start_method = start_method
        self.truncated = 0  # samples whose boxes were cut to max_boxes so far
        self.skip_unreadable = skip_unreadable
        self.skipped = 0  # rows left blank because their image could not be decoded, so far
        self.unreadable: dict[str, str] = {}  # image id -> why it could not be decoded
        self._layout = _SlotLayout(batch_size, image_size, max_boxes)
        self._resources = _Resources()
        self._finalizer = weakref.finalize(self, self._resources.release)
        self._run = 0
        self._ready: dict[int, int] = {}  # batch index -> slot: finished, not yet delivered
        self._lent: int | None = None  # the slot whose views the consumer holds
        try:
            self._create_segments()
            self._start_workers(samples, transform)
        except BaseException:
            self.close()
            raise

    # -- construction

    def _create_segments(self) -> None:
        _, slot_bytes = self._layout.offsets()
        free = _shm_free_bytes()
        if free is not None and slot_bytes * self.num_slots > free:
            raise ValueError(
                f"BatchPipeline: {self.num_slots} slots of {slot_bytes / 2**20:.1f} MB (batch_size "
                f"{self.batch_size}, image_size {self.image_size}) need more than the "
                f"{free / 2**20:.0f} MB free in /dev/shm; lower num_slots/batch_size or enlarge "
                f"/dev/shm (docker run --shm-size)")
        prefix = f"{SEGMENT_PREFIX}{os.getpid()}_{secrets.token_hex(4)}_"
        for k in range(self.num_slots):
            self._resources.segments.append(_Segment(prefix + str(k), create=True, size=slot_bytes))
            _reserve(self._resources.segments[-1], slot_bytes * self.num_slots)
        self._slots = [self._layout.views(seg.buf) for seg in self._resources.segments]
        self._free_slots = deque(range(self.num_slots))

    def _start_workers(self, samples: tuple[Sample, ...], transform: Transform) -> None:
        ctx = mp.get_context(self.start_method)
        if self.start_method == "fork" and "tensorflow" in sys.modules:
            warnings.warn("BatchPipeline(start_method='fork') after TensorFlow was imported can "
                          "deadlock workers; prefer 'spawn' or 'forkserver'", RuntimeWarning,
                          stacklevel=3)
        hide_script = self.start_method != "fork" and not _needs_script(transform)
        if self.start_method != "fork" and not hide_script:
            warnings.warn(f"transform {type(transform).__name__} is defined in the main script: "
                          "every worker re-imports that script and everything it imports "
                          "(TensorFlow?); define the transform in a module to keep workers light",
                          RuntimeWarning, stacklevel=3)
        spec = _WorkerSpec(samples, transform, self._layout,
                           tuple(seg.name.lstrip("/") for seg in self._resources.segments),
                           self.seed, self.shuffle, self.skip_unreadable)
        self._resources.stop = ctx.Event()
        self._tasks: list[deque[_Task]] = []
        for w in range(self.num_workers):
            parent_end, child_end = ctx.Pipe(duplex=True)
            proc = ctx.Process(target=_worker_main, args=(child_end, self._resources.stop, spec),
                               name=f"ssd-pipeline-{w}", daemon=True)
            with _script_hidden_from_workers() if hide_script else contextlib.nullcontext():
                proc.start()
            child_end.close()
            self._resources.processes.append(proc)
            self._resources.conns.append(parent_end)
            self._tasks.append(deque())

    # -- public API

    @property
    def batches_per_epoch(self) -> int:
        """Batches in one epoch, counting a partial last batch unless drop_remainder."""
        full, rest = divmod(self.num_samples, self.batch_size)
        return full + (1 if rest and not self.drop_remainder else 0)

    def __len__(self) -> int:
        return self.batches_per_epoch

    @property
    def worker_pids(self) -> list[int]:
        """Process ids of the workers (empty once closed)."""
        return [proc.pid for proc in self._resources.processes]

    @property
    def segment_names(self) -> list[str]:
        """Names of the shared-memory segments in /dev/shm (empty once closed)."""
        return [seg.name.lstrip("/") for seg in self._resources.segments]

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def epoch(self, epoch: int, copy: bool = False, start: int = 0) -> Iterator[Batch]:
        """Batches start, start + 1, ... of `epoch`; from 0, every sample exactly once.

        With copy=False each Batch holds views of a shared slot, valid until the next batch is
        requested, the loop is left, another epoch() starts or the pipeline closes; copy=True
        returns owned arrays. `start` resumes mid-epoch without decoding the skipped batches.
        A new epoch() call ends any earlier iterator.
        """
        if self.closed:
            raise RuntimeError("BatchPipeline.epoch: the pipeline is closed")
        if not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise ValueError(f"BatchPipeline.epoch: epoch must be an int >= 0, got {epoch!r}")
        if not isinstance(start, (int, np.integer)) or not 0 <= start <= self.batches_per_epoch:
            raise ValueError(f"BatchPipeline.epoch: start must be an int in "
                             f"[0, {self.batches_per_epoch}], got {start!r}")
        self._abandon_run()
        return self._iterate(self._run, int(epoch), copy, int(start))

    def close(self) -> None:
        """Stop the workers and unlink every shared-memory segment; safe to call twice."""
        self._slots = []  # drop our own views so the segments can be unmapped
        self._finalizer()

    def __enter__(self) -> BatchPipeline:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # -- the ring

    def _iterate(self, run: int, epoch: int, copy: bool, start: int) -> Iterator[Batch]:
        dispatched = start
        try:
            for index in range(start, self.batches_per_epoch):
                while index not in self._ready:
                    dispatched = self._dispatch(run, epoch, dispatched)
                    self._receive(run)
                slot = self._ready.pop(index)
                batch = self._view(slot, epoch, index)
                if copy:
                    batch = batch.copy()
                    self._free_slots.append(slot)
                else:
                    self._lent = slot
                yield batch
                if self._run != run:
                    raise _Superseded("BatchPipeline: this epoch iterator was ended by a later "
                                      "epoch() call")
                if self.closed:
                    raise PipelineError("BatchPipeline: closed while an epoch was being iterated")
                self._abandon_lent()  # the consumer asked for the next batch: the slot is free
                dispatched = self._dispatch(run, epoch, dispatched)
        except (GeneratorExit, _Superseded):
            raise  # the consumer left the loop: in-flight batches of this run become stale
        except BaseException:
            self.close()  # a worker failed or died, Ctrl-C, ...: take everything down
            raise
        finally:
            if self._run == run and not self.closed:
                self._abandon_run()

    def _abandon_lent(self) -> None:
        if self._lent is not None:
            self._free_slots.append(self._lent)
            self._lent = None

    def _abandon_run(self) -> None:
        """Give the lent slot and finished-but-undelivered slots back to the ring; start a new run."""
        self._abandon_lent()
        self._free_slots.extend(self._ready.values())
        self._ready.clear()
        self._run += 1  # batches of the old run still in flight are freed when they arrive

    def _dispatch(self, run: int, epoch: int, dispatched: int) -> int:
        """Send batches to the least busy workers while slots are free; returns the next batch."""
        while dispatched < self.batches_per_epoch and self._free_slots:
            worker = min(range(self.num_workers), key=lambda w: len(self._tasks[w]))
            if len(self._tasks[worker]) >= _TASKS_PER_WORKER:
                break
            task = _Task(run, epoch, dispatched, self._free_slots.popleft())
            try:
                self._resources.conns[worker].send(task)
            except OSError:  # BrokenPipeError: the worker died since it last reported
                self._raise_died(worker)
            self._tasks[worker].append(task)
            dispatched += 1
        return dispatched

    def _receive(self, run: int) -> None:
        """Block until a worker reports; file finished batches, raise on failures and deaths."""
        conns, procs = self._resources.conns, self._resources.processes
        sentinels = {proc.sentinel: w for w, proc in enumerate(procs)}
        ready: list = []
        while not ready:
            # Wake up now and then: close() from another thread (a tf.data prefetch thread may
            # be in here) does not interrupt the wait on the pipes it closes.
            if self.closed:
                raise PipelineError("BatchPipeline: closed while an epoch was being iterated")
            ready = mp.connection.wait(conns + list(sentinels), timeout=_PARENT_POLL_SECONDS)
        for obj in ready:
            w = sentinels[obj] if obj in sentinels else conns.index(obj)
            try:
                while conns[w].poll():  # a dying worker's last message may be its error
                    self._handle(w, conns[w].recv(), run)
            except (EOFError, OSError):
                self._raise_died(w)  # its end of the pipe closed: it is gone (or we were closed)
            if obj in sentinels or not procs[w].is_alive():
                self._raise_died(w)

    def _raise_died(self, worker: int) -> NoReturn:
        """PipelineError saying how `worker` died, once reaped (a pipe can close before the exit code is known)."""
        if self.closed:
            raise PipelineError("BatchPipeline: closed while an epoch was being iterated")
        proc = self._resources.processes[worker]
        proc.join(_JOIN_SECONDS)
        state = "is still running but closed its pipe" if proc.exitcode is None else \
            f"died, {_describe_exit(proc.exitcode)}"
        hint = "(if it printed a traceback, see stderr)"
        if proc.exitcode == -signal.SIGBUS:  # a write into a shared-memory page the system could not provide
            hint = f"(SIGBUS: {_shm_advice(self._layout.offsets()[1] * self.num_slots)})"
        raise PipelineError(
            f"BatchPipeline: worker {worker} (pid {proc.pid}) {state}, while on batches "
            f"{[t.batch_index for t in self._tasks[worker]]} {hint}")

    def _handle(self, worker: int, message: _Done | _Failed | _Stopped, run: int) -> None:
        task = message.task
        self._tasks[worker].popleft()
        if isinstance(message, _Failed):
            raise PipelineError(f"BatchPipeline: worker {worker} failed on sample {message.image_id!r} "
                                f"({message.image_path}), batch {task.batch_index}:\n{message.traceback}")
        if isinstance(message, _Done):
            self._report_truncated(message.truncated)
            self._report_skipped(message.skipped)
        if isinstance(message, _Done) and task.run == run == self._run:
            self._ready[task.batch_index] = task.slot
        else:
            self._free_slots.append(task.slot)  # a batch of an abandoned epoch

    def _report_truncated(self, truncated: list[tuple[str, int]]) -> None:
        if truncated and self.truncated == 0:
            image_id, n = truncated[0]
            warnings.warn(f"BatchPipeline: image {image_id!r} has {n} boxes after the transform, "
                          f"more than max_boxes={self.max_boxes}; keeping the first "
                          f"{self.max_boxes}. Further cases are counted in BatchPipeline.truncated "
                          "without warning.", RuntimeWarning, stacklevel=2)
        self.truncated += len(truncated)

    def _report_skipped(self, skipped: list[tuple[str, str]]) -> None:
        for image_id, reason in skipped:
            if image_id not in self.unreadable:  # named once; counted every epoch it comes round
                warnings.warn(f"BatchPipeline: skipped image {image_id!r}: {reason} (its row in the "
                              "batch is left blank)", RuntimeWarning, stacklevel=2)
                self.unreadable[image_id] = reason
        self.skipped += len(skipped)

    def _view(self, slot: int, epoch: int, index: int) -> Batch:
        size = min(self.batch_size, self.num_samples - index * self.batch_size)
        arrays = self._slots[slot]
        return Batch(arrays["images"][:size], arrays["boxes"][:size], arrays["labels"][:size],
                     arrays["counts"][:size], arrays["indices"][:size], epoch, index)


def _check_arguments(samples: tuple, transform: Any, batch_size: int, image_size: int,
                     max_boxes: int, num_workers: int, seed: int, num_slots: int,
                     start_method: str) -> None:
    """Refuse bad BatchPipeline arguments with a message naming the argument."""
    if not samples:
        raise ValueError("BatchPipeline: samples is empty")
    if not callable(transform):
        raise TypeError(f"BatchPipeline: transform must be callable, got {type(transform).__name__}")
    for name, value in (("batch_size", batch_size), ("image_size", image_size),
                        ("max_boxes", max_boxes), ("num_workers", num_workers),
                        ("num_slots", num_slots)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"BatchPipeline: {name} must be an int >= 1, got {value!r}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"BatchPipeline: seed must be an int >= 0, got {seed!r}")
    methods = mp.get_all_start_methods()
    if start_method not in methods:
        raise ValueError(f"BatchPipeline: start_method must be one of {methods}, "
                         f"got {start_method!r}")


def as_tf_dataset(pipeline: BatchPipeline, epochs: int | Iterable[int]) -> Any:
    """A tf.data.Dataset of the pipeline's batches over `epochs` (a count, or epoch numbers).

    Elements are `Batch.arrays()` dicts (the layout in `Batch`); B may be smaller in the last
    batch. Each batch is copied once out of its slot, because tf.data keeps tensors that
    alias aligned NumPy memory, which the ring reuses. Drop the dataset's iterators before
    closing the pipeline; an iterator still running then raises PipelineError. A training loop can skip tf.data and
    pass the NumPy views straight to a tf.function (one copy into tensors), provided it reads a
    result of that step (e.g. the loss) before asking for the next batch.
    """
    import tensorflow as tf

    epoch_list = range(epochs) if isinstance(epochs, (int, np.integer)) else epochs
    s, m = pipeline.image_size, pipeline.max_boxes

    def generate() -> Iterator[dict[str, np.ndarray]]:
        for epoch in epoch_list:
            for batch in pipeline.epoch(epoch, copy=True):
                yield batch.arrays()

    signature = {name: tf.TensorSpec(shape, tf.as_dtype(dtype)) for name, dtype, shape in Batch.layout(None, s, m)}
    return tf.data.Dataset.from_generator(generate, output_signature=signature)
