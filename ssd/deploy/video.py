"""Detection over a video (file or webcam) with any detection callable (`ssd.detections.DetectFn`).

Video runs as three overlapping stages joined by bounded queues:

    decode thread (OpenCV BGR frames, plus an RGB copy per batch for the graph)
        ->  inference (graph call per batch, caller's thread)
        ->  draw + encode thread (boxes and labels drawn on the BGR frames, mp4 'mp4v', JSON lines)

On a CPU the stages share the cores with the model, so the I/O stages are made cheap (one colour
conversion per frame, straight into the batch array; detections selected once as arrays for both
drawing and JSON; drawing in place on the decoded frame, labels pasted from a cache; OpenCV's own
thread pool off, as it wakes for every small call) and, on Linux, run at a lower
priority, so that they mostly run in the gaps the model leaves rather than preempting its threads
(the queues between stages let them fall behind for a while).

Each stage times its own work, so the report separates model time from I/O. A stage that fails
stops the others (no stage ever blocks forever on a full or empty queue), and a video that ends
before the frame count its container claims is reported as truncated or corrupt.

Detections are written as JSON lines {"video", "frame", "time_s", "width", "height",
"detections"}, with the records of `ssd.detections.ImageDetections.records`.

With `track` (`ssd.deploy.tracking`), the draw+encode stage also runs the tracker on each frame's
detections, in frame order, before drawing: the frame's detections are then those that belong to a
track, each with its `track_id`; the annotated video shows the ids and a short trail per track, and
`mot` receives MOTChallenge result lines (`ssd.mot`). The tracker's own time is reported apart.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import cv2
import numpy as np
from tqdm import tqdm

from ssd.deploy.images import draw, note_unnamed
from ssd.deploy.tracking import ByteTracker, TrackerOptions
from ssd.detections import DetectFn, select_detections
from ssd.mot import result_lines
from ssd.visualize import Trails

DEFAULT_FPS = 30.0  # when a container (or a webcam) reports no frame rate
_POLL_S = 0.1  # how often a blocked stage checks whether another stage has stopped
_IO_NICENESS = 10  # added to the decode and draw+encode threads' nice value (Linux)


@dataclass
class VideoReport:
    """Frames and seconds per stage of one video run; `error` is set when the run did not finish."""

    source: str
    width: int = 0
    height: int = 0
    fps: float = 0.0
    expected_frames: int = 0  # from the container; 0 when unknown (webcam, some formats)
    written_size: tuple[int, int] = (0, 0)  # the annotated video's (width, height): even, as mp4 needs
    frames: int = 0  # decoded, detected, drawn and written
    detections: int = 0
    decode_s: float = 0.0
    model_s: float = 0.0
    draw_encode_s: float = 0.0  # the tracker's time excluded
    track_s: float = 0.0  # CPU time of the tracker (in the draw+encode thread)
    tracked: bool = False
    wall_s: float = 0.0
    error: str | None = None
    unnamed_classes: set[int] = field(default_factory=set)  # class ids detected that have no name

    @property
    def wall_fps(self) -> float:
        return self.frames / self.wall_s if self.wall_s > 0 else 0.0

    def summary(self) -> str:
        """One line per number: wall FPS, then each stage's own rate (ms per frame)."""
        def per_frame(seconds: float) -> str:
            return f"{1000 * seconds / self.frames:7.2f} ms/frame" if self.frames else "    n/a"

        model_fps = self.frames / self.model_s if self.model_s > 0 else 0.0
        padded = "" if self.written_size in ((0, 0), (self.width, self.height)) else \
            f" (annotated copy {self.written_size[0]}x{self.written_size[1]}: mp4 stores even sizes, edge repeated)"
        return "\n".join([
            f"{self.source}: {self.frames} frames {self.width}x{self.height} @ {self.fps:g} fps{padded}",
            f"  total wall   {self.wall_s:8.2f} s  {self.wall_fps:8.1f} FPS (decode, model, draw+encode overlap)",
            f"  model        {self.model_s:8.2f} s  {model_fps:8.1f} FPS  {per_frame(self.model_s)}",
            f"  decode       {self.decode_s:8.2f} s  {per_frame(self.decode_s)}",
            f"  draw+encode  {self.draw_encode_s:8.2f} s  {per_frame(self.draw_encode_s)}",
        ] + ([f"  tracker      {self.track_s:8.2f} s  {per_frame(self.track_s)}  (CPU time; "
              f"{100 * self.track_s / max(self.model_s, 1e-9):.1f}% of the model's time)"] if self.tracked else []))  # fmt: skip


class _Stop(Exception):
    """Raised inside a stage when another stage has failed or the run was interrupted."""


class _Stages:
    """The queues and the shared stop flag of one video run."""

    def __init__(self, depth: int):
        self.frames: queue.Queue = queue.Queue(depth)
        self.results: queue.Queue = queue.Queue(depth)
        self.stop = threading.Event()
        self.errors: list[str] = []

    def put(self, q: queue.Queue, item: Any) -> None:
        while True:
            if self.stop.is_set():
                raise _Stop
            try:
                q.put(item, timeout=_POLL_S)
                return
            except queue.Full:
                continue

    def get(self, q: queue.Queue) -> Any:
        while True:
            try:
                return q.get(timeout=_POLL_S)
            except queue.Empty:
                if self.stop.is_set():
                    raise _Stop from None

    def fail(self, message: str) -> None:
        self.errors.append(message)
        self.stop.set()


_END = object()  # end of stream marker passed down the queues


def open_video(source: str | int) -> tuple[cv2.VideoCapture, VideoReport]:
    """Open a video file or webcam index; ValueError naming it if OpenCV cannot read it."""
    name = f"webcam {source}" if isinstance(source, int) else str(source)
    if not isinstance(source, int) and not Path(source).is_file():
        raise ValueError(f"video {name} does not exist")
    capture = None
    if isinstance(source, str):
        # One FFmpeg decoding thread: more threads cost more CPU in all (CPU the model needs);
        # a file FFmpeg cannot open is tried once more with whatever backend OpenCV picks.
        capture = cv2.VideoCapture(source, cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])
    if capture is None or not capture.isOpened():
        capture = cv2.VideoCapture(source)
    if not capture.isOpened():
        capture.release()
        raise ValueError(f"video {name} cannot be opened: not a video, or truncated/corrupt "
                         "(e.g. an mp4 cut before its index)")
    report = VideoReport(source=name)
    report.width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
    report.height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    fps = capture.get(cv2.CAP_PROP_FPS)
    report.fps = fps if np.isfinite(fps) and 0 < fps < 1000 else DEFAULT_FPS
    count = capture.get(cv2.CAP_PROP_FRAME_COUNT)
    report.expected_frames = int(count) if isinstance(source, str) and np.isfinite(count) and count > 0 else 0
    return capture, report


def detect_video(
    source: str | int,
    detect: DetectFn,
    out_video: Path | None,
    jsonl: TextIO | None,
    class_names: Sequence[str],
    threshold: float,
    batch_size: int = 8,
    max_frames: int | None = None,
    progress: bool = True,
    queue_depth: int = 4,
    track: TrackerOptions | None = None,
    mot: TextIO | None = None,
) -> VideoReport:
    """Run the three-stage pipeline on one video; never raises for a bad video, sets `report.error`.

    Args:
        source: a video file path or a webcam index.
        out_video: annotated mp4 path (same size and frame rate as the input), or None.
        jsonl: where to write one JSON line per frame, or None.
        batch_size: frames per graph call.
        max_frames: stop after this many frames (webcams run until interrupted otherwise).
        queue_depth: batches buffered between stages.
        track: track objects with these options (a tracker per video, at its frame rate), or None.
        mot: with `track`, where to write the MOTChallenge result lines, or None.
    """
    try:
        capture, report = open_video(source)
    except ValueError as err:
        return VideoReport(source=str(source), error=str(err))
    start = time.perf_counter()
    writer = None
    opencv_threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        if out_video is not None:
            # OpenCV's FFmpeg writer silently drops the last column/row of an odd size: pad instead,
            # so every pixel and box keeps its place (the JSON lines keep the source's size).
            report.written_size = (report.width + report.width % 2, report.height + report.height % 2)
            writer = cv2.VideoWriter(str(out_video), cv2.VideoWriter_fourcc(*"mp4v"), report.fps, report.written_size)
            if not writer.isOpened():
                report.error = (f"cannot write video {out_video}: OpenCV's mp4v writer did not open it "
                                f"({report.written_size[0]}x{report.written_size[1]}); is its folder writable?")
                return report
        stages = _Stages(queue_depth)
        total = report.expected_frames or None
        if max_frames is not None and total is not None:
            total = min(total, max_frames)
        bar = tqdm(total=total, desc=Path(str(source)).name, unit="frame", disable=not progress)
        decoded = [0]
        tracking = None if track is None else _Tracking(ByteTracker(track, report.fps), mot)
        report.tracked = tracking is not None
        threads = [
            threading.Thread(target=_decode_stage, args=(capture, stages, batch_size, max_frames, report, decoded),
                             name="decode", daemon=True),
            threading.Thread(target=_write_stage,
                             args=(stages, writer, jsonl, class_names, threshold, report, bar, tracking),
                             name="draw+encode", daemon=True),
        ]  # fmt: skip
        for thread in threads:
            thread.start()
        try:
            _inference_stage(stages, detect, report)
        except KeyboardInterrupt:
            stages.fail("interrupted")
        for thread in threads:
            thread.join()
        bar.close()
        if stages.errors and stages.errors != ["interrupted"]:
            report.error = "; ".join(stages.errors)
        elif report.expected_frames and decoded[0] < min(report.expected_frames, max_frames or decoded[0] + 1):
            report.error = (f"video {report.source} ended after {decoded[0]} of {report.expected_frames} "
                            "frames (truncated or corrupt)")
        elif decoded[0] == 0:
            report.error = f"video {report.source} has no decodable frame"
    finally:
        capture.release()
        if writer is not None:
            writer.release()
        cv2.setNumThreads(opencv_threads)
        report.wall_s = time.perf_counter() - start
    if writer is not None and report.frames and not report.error:
        report.error = _unwritten_video_problem(out_video, report.frames)
    return report


def _unwritten_video_problem(path: Path, frames: int) -> str | None:
    """Why the annotated video at `path` does not hold its `frames` frames (the partial file removed), or None.

    OpenCV's writer reports nothing: a full disk or a file removed under it leaves a video cut short
    (without the index an mp4 needs to be read at all) or none, so the file is opened again to check.
    """
    capture = cv2.VideoCapture(str(path))
    readable = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if capture.isOpened() else 0
    capture.release()
    if readable >= frames:
        return None
    exists = os.path.exists(path)
    path.unlink(missing_ok=True)
    free = shutil.disk_usage(path.parent).free / 2**20 if path.parent.is_dir() else 0.0
    return (f"could not write video {path}: {readable} of {frames} frames can be read back "
            f"({'the partial file was removed' if exists else 'the file is gone'}; {free:.0f} MB free on that "
            f"disk): free some space or choose another --out")


def _lower_thread_priority() -> None:
    """Make the calling thread yield the CPU to the inference threads (Linux: per-thread nice)."""
    if sys.platform.startswith("linux"):  # elsewhere PRIO_PROCESS would renice the whole process
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(),
                           os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) + _IO_NICENESS)


def _decode_stage(capture, stages: _Stages, batch_size: int, max_frames: int | None,
                  report: VideoReport, decoded: list[int]) -> None:
    """Read BGR frames and send them downstream in batches with their RGB copy; then the end marker.

    A batch is (rgb uint8 [B, H, W, 3] for the graph, list of the B decoded BGR frames).
    """
    _lower_thread_priority()
    try:
        frames: list[np.ndarray] = []
        rgb = np.empty((batch_size, report.height, report.width, 3), np.uint8)
        while max_frames is None or decoded[0] < max_frames:
            tic = time.perf_counter()
            ok, frame = capture.read()
            if not ok:
                break
            if frame.shape != rgb.shape[1:]:
                raise ValueError(f"video {report.source}: frame {decoded[0]} is {frame.shape[1]}x{frame.shape[0]}, "
                                 f"the stream said {report.width}x{report.height}")
            cv2.cvtColor(frame, cv2.COLOR_BGR2RGB, dst=rgb[len(frames)])
            report.decode_s += time.perf_counter() - tic
            decoded[0] += 1
            frames.append(frame)
            if len(frames) == batch_size:
                stages.put(stages.frames, (rgb, frames))
                frames, rgb = [], np.empty_like(rgb)
        if frames:
            stages.put(stages.frames, (rgb[: len(frames)], frames))
        stages.put(stages.frames, _END)
    except _Stop:
        pass
    except Exception as err:  # a stage must report, never die silently
        stages.fail(f"decoding failed: {type(err).__name__}: {err}")


def _inference_stage(stages: _Stages, detect: DetectFn, report: VideoReport) -> None:
    """Graph call per batch, in the caller's thread; passes frames and outputs downstream."""
    try:
        while True:
            item = stages.get(stages.frames)
            if item is _END:
                stages.put(stages.results, _END)
                return
            rgb, frames = item
            tic = time.perf_counter()
            outputs = detect(rgb)
            report.model_s += time.perf_counter() - tic
            stages.put(stages.results, (frames, outputs))
    except _Stop:
        pass
    except Exception as err:
        stages.fail(f"detection failed: {type(err).__name__}: {err}")


@dataclass
class _Tracking:
    """A video's tracker, its trails and where its MOT lines go."""

    tracker: ByteTracker
    mot: TextIO | None
    trails: Trails = field(default_factory=Trails)


def _write_stage(stages: _Stages, writer, jsonl: TextIO | None, class_names: Sequence[str],
                 threshold: float, report: VideoReport, bar: tqdm, tracking: _Tracking | None) -> None:
    """Track (optionally), draw and encode every frame, write its JSON line; stops at the end marker."""
    _lower_thread_priority()
    try:
        while True:
            item = stages.get(stages.results)
            if item is _END:
                return
            batch, outputs = item
            for i, frame in enumerate(batch):
                tic = time.perf_counter()
                detections = select_detections(outputs, i, report.width, report.height, threshold)
                if tracking is not None:
                    # The tracker's cost is this thread's CPU time: at its low priority, the thread's
                    # wall time also counts the waits while the model's threads run.
                    start, start_cpu = time.perf_counter(), time.thread_time()
                    detections = detections.tracked(tracking.tracker.update(
                        detections.boxes_xyxy, detections.scores, detections.class_ids))
                    if tracking.mot is not None:
                        tracking.mot.write(result_lines(report.frames + 1, detections.track_ids,
                                                        detections.boxes_xyxy, detections.scores))
                    report.track_s += time.thread_time() - start_cpu
                    tic += time.perf_counter() - start  # draw+encode's time leaves the tracker's out
                if writer is not None:
                    if tracking is not None:
                        tracking.trails.update(detections.track_ids, detections.boxes_xyxy)
                        tracking.trails.draw(frame, bgr=True)
                    writer.write(_even_sized(draw(frame, detections, class_names, bgr=True, in_place=True),
                                             report.written_size))
                if jsonl is not None:
                    jsonl.write(json.dumps({
                        "video": report.source, "frame": report.frames,
                        "time_s": round(report.frames / report.fps, 4), "width": report.width,
                        "height": report.height, "detections": detections.records(class_names),
                    }) + "\n")  # fmt: skip
                report.frames += 1
                report.detections += len(detections.scores)
                note_unnamed(report.unnamed_classes, detections, class_names)
                report.draw_encode_s += time.perf_counter() - tic
            bar.update(len(batch))
    except _Stop:
        pass
    except Exception as err:
        stages.fail(f"drawing/encoding failed: {type(err).__name__}: {err}")


def _even_sized(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`frame` padded at the right and bottom (edge repeated) to `size` (width, height)."""
    pad_x, pad_y = size[0] - frame.shape[1], size[1] - frame.shape[0]
    return cv2.copyMakeBorder(frame, 0, pad_y, 0, pad_x, cv2.BORDER_REPLICATE) if pad_x or pad_y else frame
