"""detect.py, ssd/deploy/images.py and ssd/deploy/video.py: images, videos (frame count, size, rate), broken inputs."""

from __future__ import annotations

import json
import os
import re
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
import tensorflow as tf

import detect
from ssd.config import ModelConfig
from ssd.deploy.images import expand_inputs
from ssd.deploy.video import _lower_thread_priority
from ssd.deploy.export import export_module, frozen_graph_def, write_labels
from ssd.deploy.frozen_graph import FrozenGraph
from ssd.detections import detection_records
from ssd.modeling.model import build_model_from_config
from tools.make_synthetic_video import synthetic_frames, write_synthetic_video

CLASSES = ("circle", "square", "triangle")
THRESHOLD = "0.3"  # an untrained model's softmax over 4 classes sits around 0.25..1: some pass


@pytest.fixture(scope="module")
def graph_dir(tmp_path_factory) -> Path:
    """An exported frozen graph of an untrained slim model (width 0.125) with labels.txt."""
    out = tmp_path_factory.mktemp("graph")
    tf.keras.utils.set_random_seed(1)
    config = ModelConfig("vgg300", CLASSES, width=0.125)
    module = export_module(build_model_from_config(config), config, max_detections=20)
    (out / "frozen_inference_graph.pb").write_bytes(frozen_graph_def(module).SerializeToString())
    write_labels(out / "labels.txt", CLASSES)
    return out


def read_video(path: Path) -> tuple[list[np.ndarray], float, tuple[int, int], int]:
    """Frames (BGR), fps, (width, height) and the container's frame count."""
    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened(), f"cannot open {path}"
    fps = capture.get(cv2.CAP_PROP_FPS)
    size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames, fps, size, count


@pytest.mark.slow
def test_video_keeps_frame_count_size_rate_and_writes_a_line_per_frame(graph_dir, tmp_path):
    video = write_synthetic_video(tmp_path / "clip.mp4", num_frames=12, fps=10.0, width=160, height=120)
    opencv_threads = cv2.getNumThreads()
    code = detect.main([str(video), "--graph", str(graph_dir), "--out", str(tmp_path / "out"),
                        "--batch-size", "5", "--threshold", THRESHOLD, "--quiet"])
    assert code == 0
    assert cv2.getNumThreads() == opencv_threads, "the run restores OpenCV's thread count"
    frames, fps, size, count = read_video(tmp_path / "out" / "clip.mp4")
    assert (len(frames), count, fps, size) == (12, 12, 10.0, (160, 120))
    lines = [json.loads(line) for line in (tmp_path / "out" / "clip.jsonl").read_text().splitlines()]
    assert [line["frame"] for line in lines] == list(range(12))
    # Frame 7's JSON equals a direct graph call on the same decoded frame (batching changes nothing).
    source_frames, _, _, _ = read_video(video)
    rgb = cv2.cvtColor(source_frames[7], cv2.COLOR_BGR2RGB)
    direct = detection_records(FrozenGraph(graph_dir / "frozen_inference_graph.pb")(rgb[None]), 0, 160, 120,
                               CLASSES, float(THRESHOLD))
    assert lines[7]["detections"] == direct and direct, "need at least one detection to compare"
    for record in direct:
        x1, y1, x2, y2 = record["box_xyxy"]
        assert 0 <= x1 <= x2 <= 160 and 0 <= y1 <= y2 <= 120
        assert record["class_name"] == CLASSES[record["class_id"] - 1]


@pytest.mark.slow
def test_truncated_videos_end_with_a_clear_message(graph_dir, tmp_path, capsys):
    # An mp4 cut in half loses its index (OpenCV cannot open it); an AVI cut in half opens,
    # claims 12 frames in its header and decodes fewer.
    mp4 = write_synthetic_video(tmp_path / "full.mp4", num_frames=12, fps=10.0, width=128, height=96)
    (tmp_path / "half.mp4").write_bytes(mp4.read_bytes()[: mp4.stat().st_size // 2])
    writer = cv2.VideoWriter(str(tmp_path / "full.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (128, 96))
    for frame, _, _ in synthetic_frames(12, 128, 96):
        writer.write(frame)
    writer.release()
    avi = (tmp_path / "full.avi").read_bytes()
    (tmp_path / "half.avi").write_bytes(avi[: len(avi) // 2])
    code = detect.main([str(tmp_path / "half.mp4"), str(tmp_path / "half.avi"), "--graph", str(graph_dir),
                        "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1
    assert f"video {tmp_path / 'half.mp4'} cannot be opened" in err
    assert re.search(rf"video {re.escape(str(tmp_path / 'half.avi'))} ended after [1-9]\d* of 12 frames "
                     r"\(truncated or corrupt\)", err)


@pytest.mark.slow
def test_images_directory_with_an_unreadable_file(graph_dir, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    for k, (frame, _, _) in enumerate(synthetic_frames(2, 96, 80, seed=4)):
        cv2.imwrite(str(images / f"{k}.jpg"), frame)
    (images / "broken.jpg").write_bytes(b"not a jpeg")
    code = detect.main([str(images), "--graph", str(graph_dir / "frozen_inference_graph.pb"),
                        "--out", str(tmp_path / "out"), "--threshold", THRESHOLD, "--quiet"])
    assert code == 1
    assert "broken.jpg is not a readable image" in capsys.readouterr().err
    lines = [json.loads(line) for line in (tmp_path / "out" / "detections.jsonl").read_text().splitlines()]
    by_name = {Path(line["image"]).name: line for line in lines}
    assert set(by_name) == {"0.jpg", "1.jpg", "broken.jpg"} and "error" in by_name["broken.jpg"]
    assert (by_name["0.jpg"]["width"], by_name["0.jpg"]["height"]) == (96, 80)
    assert cv2.imread(str(tmp_path / "out" / "1.jpg")).shape == (80, 96, 3)


def test_expand_inputs_sorts_directories_globs_and_videos(tmp_path):
    for name in ("b.jpg", "a.png", "c.mp4", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    images, videos, errors = expand_inputs([str(tmp_path), str(tmp_path / "*.png"), str(tmp_path / "nope.jpg")])
    assert [p.name for p in images] == ["a.png", "b.jpg", "a.png"]
    assert [p.name for p in videos] == ["c.mp4"]
    assert errors == [f"input {tmp_path / 'nope.jpg'} does not exist"]


def test_cli_refuses_missing_graph_and_no_input(tmp_path, capsys):
    assert detect.main(["--graph", str(tmp_path)]) == 2
    assert detect.main(["x.jpg", "--graph", str(tmp_path)]) == 2
    assert "frozen_inference_graph.pb does not exist" in capsys.readouterr().err


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are Linux's")
def test_io_stage_threads_run_at_a_lower_priority_than_the_caller():
    seen = {}

    def stage():
        _lower_thread_priority()
        seen["stage"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    thread = threading.Thread(target=stage)
    thread.start()
    thread.join()
    caller = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    assert seen["stage"] == min(caller + 10, 19), "the stage thread is reniced, the caller is not"
