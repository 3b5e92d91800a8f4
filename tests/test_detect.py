"""detect.py, ssd/deploy/images.py and ssd/deploy/video.py: images, videos (frame count, size, rate), broken inputs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import hostile_files as hf
import numpy as np
import pytest
import tensorflow as tf

from ssd.cli import detect
from ssd.config import ModelConfig
from ssd.core.postprocess import PostprocessOptions
from ssd.deploy.images import expand_inputs
from ssd.deploy.video import _lower_thread_priority
from ssd.deploy.export import write_labels
from ssd.deploy.graph import export_module, frozen_graph_def
from ssd.deploy.frozen_graph import FrozenGraph
from ssd.detections import detection_records
from ssd.modeling.model import build_model_from_config
from ssd_datasets.synthetic_video import synthetic_frames, write_synthetic_video

CLASSES = ("circle", "square", "triangle")
THRESHOLD = "0.3"  # an untrained model's softmax over 4 classes sits around 0.25..1: some pass


@pytest.fixture(scope="module")
def graph_dir(tmp_path_factory) -> Path:
    """An exported frozen graph of an untrained slim model (width 0.125) with labels.txt."""
    out = tmp_path_factory.mktemp("graph")
    tf.keras.utils.set_random_seed(1)
    config = ModelConfig("vgg300", CLASSES, width=0.125)
    module = export_module(build_model_from_config(config), config, PostprocessOptions(max_detections=20))
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
def test_video_tracked_from_the_command_line(graph_dir, tmp_path):
    video = write_synthetic_video(tmp_path / "clip.mp4", num_frames=8, fps=10.0, width=160, height=120)
    code = detect.main([str(video), "--graph", str(graph_dir), "--out", str(tmp_path / "out"), "--quiet",
                        "--mot", str(tmp_path / "mot")])  # --mot implies --track
    assert code == 0
    lines = [json.loads(line) for line in (tmp_path / "out" / "clip.jsonl").read_text().splitlines()]
    tracked = [d for line in lines for d in line["detections"]]
    assert tracked and all(d["track_id"] >= 1 for d in tracked), "an untrained model still starts some tracks"
    mot = (tmp_path / "mot" / "clip.txt").read_text().splitlines()
    assert len(mot) == len(tracked) and mot[0].startswith("1,") and mot[0].endswith(",-1,-1,-1")


def test_cli_refuses_an_unwritable_mot_folder(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert detect.main(["x.mp4", "--model", str(tmp_path), "--out", str(tmp_path / "out"),
                        "--mot", str(tmp_path / "file")]) == 2
    assert f"--mot {tmp_path / 'file'}: is a file" in capsys.readouterr().err


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
    assert "broken.jpg is not a JPEG, PNG, BMP or WebP image" in capsys.readouterr().err
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


def png_declaring(width: int, height: int) -> bytes:
    """A small PNG whose IHDR declares width x height RGB pixels (a decompression bomb's header)."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    rows = zlib.compress(b"\x00" * 4096)  # the first rows only: the file stays tiny
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


def no_detections(images: np.ndarray) -> dict[str, np.ndarray]:
    b = len(images)
    return {"detection_boxes": np.zeros((b, 1, 4), np.float32), "detection_scores": np.zeros((b, 1), np.float32),
            "detection_classes": np.ones((b, 1), np.float32), "num_detections": np.zeros(b, np.float32)}


def test_images_are_decoded_as_needed_not_all_first(tmp_path):
    from ssd.deploy.images import detect_images

    paths = []
    for k, (frame, _, _) in enumerate(synthetic_frames(4, 96, 80, seed=2)):
        paths.append(tmp_path / f"{k}.png")
        cv2.imwrite(str(paths[-1]), frame)

    def detect_and_delete_the_last(images):  # had everything been decoded first, this would not matter
        paths[-1].unlink(missing_ok=True)
        return no_detections(images)

    jsonl = tmp_path / "out.jsonl"
    with open(jsonl, "w") as f:
        report = detect_images(paths, detect_and_delete_the_last, None, f, CLASSES, 0.5, batch_size=2, progress=False)
    # image 2 is read before the first call (to see the first batch is full), image 3 is not
    assert report.done == 3 and len(report.errors) == 1 and "3.png" in report.errors[0]
    assert [json.loads(line).get("error", "ok")[:10] for line in jsonl.read_text().splitlines()] == \
        ["ok", "ok", "image file", "ok"]


def test_pixel_bomb_and_bad_files_are_skipped_by_name_and_the_rest_detected(tmp_path, capsys):
    from ssd.deploy.images import detect_images

    images = tmp_path / "images"
    images.mkdir()
    for k, (frame, _, _) in enumerate(synthetic_frames(2, 96, 80, seed=4)):
        cv2.imwrite(str(images / f"{k}.jpg"), frame)
    (images / "bomb.png").write_bytes(png_declaring(50_000, 50_000))
    (images / "empty.jpg").write_bytes(b"")
    paths = sorted(images.iterdir())
    with open(tmp_path / "out.jsonl", "w") as f:
        report = detect_images(paths, no_detections, None, f, CLASSES, 0.5, progress=False)
    assert report.done == 2
    assert any(f"{images / 'bomb.png'} declares 50000x50000" in e for e in report.errors), report.errors
    assert any("empty.jpg" in e for e in report.errors), report.errors
    # The limit is the caller's: one pixel under 96x80 refuses the good images too.
    with open(tmp_path / "out.jsonl", "w") as f:
        report = detect_images(paths, no_detections, None, f, CLASSES, 0.5, progress=False, max_pixels=96 * 80 - 1)
    assert report.done == 0 and sum("declares 96x80" in e for e in report.errors) == 2


def test_cli_refuses_an_out_that_is_a_file_or_under_one_and_an_empty_labels_file(graph_dir, tmp_path, capsys):
    (tmp_path / "taken").write_text("x")
    image = tmp_path / "a.jpg"
    cv2.imwrite(str(image), np.zeros((8, 8, 3), np.uint8))
    assert detect.main([str(image), "--graph", str(graph_dir), "--out", str(tmp_path / "taken"), "--quiet"]) == 2
    assert f"--out {tmp_path / 'taken'}: is a file, not a directory" in capsys.readouterr().err
    assert detect.main([str(image), "--graph", str(graph_dir), "--out", str(tmp_path / "taken" / "sub")]) == 2
    assert "cannot create or write there" in capsys.readouterr().err
    (tmp_path / "labels.txt").write_text("\n\n")
    assert detect.main([str(image), "--graph", str(graph_dir), "--labels", str(tmp_path / "labels.txt"),
                        "--out", str(tmp_path / "out")]) == 2
    assert f"labels file {tmp_path / 'labels.txt'} names no classes" in capsys.readouterr().err
    (tmp_path / "bare").mkdir()  # a graph without labels.txt: ids are shown, and it says so
    (tmp_path / "bare" / "frozen_inference_graph.pb").write_bytes((graph_dir / "frozen_inference_graph.pb").read_bytes())
    assert detect.main([str(image), "--graph", str(tmp_path / "bare"), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    assert f"warning: no labels file ({tmp_path / 'bare' / 'labels.txt'} does not exist)" in capsys.readouterr().err


def test_synthetic_video_tool_refuses_odd_mp4_and_writes_odd_avi_at_its_true_size(tmp_path):
    with pytest.raises(ValueError, match=r"321x239 would be written as 320x238"):
        write_synthetic_video(tmp_path / "odd.mp4", num_frames=2, width=321, height=239)
    frames, _, size, count = read_video(write_synthetic_video(tmp_path / "odd.avi", num_frames=3, width=321, height=239))
    assert (size, count, frames[0].shape) == ((321, 239), 3, (239, 321, 3))


@pytest.mark.slow
def test_odd_sized_video_keeps_every_pixel_and_says_its_size_and_unnamed_classes_are_warned(graph_dir, tmp_path,
                                                                                            capsys):
    video = write_synthetic_video(tmp_path / "odd.avi", num_frames=4, fps=10.0, width=321, height=239)
    (tmp_path / "one.txt").write_text("circle\n")  # the graph has three classes
    code = detect.main([str(video), "--graph", str(graph_dir), "--out", str(tmp_path / "out"), "--threshold", "0.0",
                        "--labels", str(tmp_path / "one.txt"), "--quiet"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    source, _, _, _ = read_video(video)
    frames, _, size, count = read_video(tmp_path / "out" / "odd.mp4")
    assert (size, count) == ((322, 240), 4)  # padded, not cut: the last column and row survive
    lines = [json.loads(line) for line in (tmp_path / "out" / "odd.jsonl").read_text().splitlines()]
    assert {(line["width"], line["height"]) for line in lines} == {(321, 239)}
    assert "321x239" in captured.out and "annotated copy 322x240" in captured.out
    assert re.search(rf"warning: labels file {re.escape(str(tmp_path / 'one.txt'))} names 1 classes, but the graph "
                     r"detected class ids \[[23](, 3)?\]", captured.err), captured.err
    # The padding repeats the edge: the added column equals the last source column (up to the codec).
    assert np.abs(frames[0][:239, 321].astype(int) - frames[0][:239, 320].astype(int)).mean() < 8


def test_special_files_among_the_inputs_are_refused_by_name_at_once(tmp_path):
    """Links to /dev/zero and FIFOs, as images and as a video: refused without a read, the rest detected."""
    folder = tmp_path / "inputs"
    kinds = hf.special_files(folder)
    os.mkfifo(folder / "pipe.mp4")
    cv2.imwrite(str(folder / "ok.jpg"), np.zeros((16, 24, 3), np.uint8))
    body = """
images, videos, errors = expand_inputs([sys.argv[1], sys.argv[1] + "/zero.jpg"])
out = io.StringIO()
report = detect_images(images + [Path(sys.argv[1]) / "fifo.jpg"], no_detections, None, out, ("a",), 0.5,
                       progress=False)
result = {"images": [p.name for p in images], "videos": [p.name for p in videos], "errors": errors,
          "image_errors": report.errors, "done": report.done}
"""
    imports = "import io\nfrom pathlib import Path\nfrom ssd.deploy.images import detect_images, expand_inputs\n"
    run = hf.measure(imports + _NO_DETECTIONS_SOURCE, body, folder)  # no TensorFlow: a fake detector
    result = run["result"]
    assert result["images"] == ["ok.jpg"] and result["videos"] == [] and result["done"] == 1
    assert sorted(result["errors"]) == sorted([f"input {folder / 'fifo.jpg'} {kinds['fifo']}",
                                               f"input {folder / 'pipe.mp4'} {kinds['fifo']}",
                                               f"input {folder / 'zero.jpg'} {kinds['zero']}",
                                               f"input {folder / 'zero.jpg'} {kinds['zero']}"])
    assert result["image_errors"] == [f"image file {folder / 'fifo.jpg'} {kinds['fifo']}"]
    assert run["peak_mb"] - run["baseline_mb"] < hf.LOAD_BOUND_MB and run["seconds"] < hf.LOAD_BOUND_S, run


_NO_DETECTIONS_SOURCE = '''
import numpy as np
def no_detections(images):
    b = len(images)
    return {"detection_boxes": np.zeros((b, 1, 4), np.float32), "detection_scores": np.zeros((b, 1), np.float32),
            "detection_classes": np.ones((b, 1), np.float32), "num_detections": np.zeros(b, np.float32)}
'''


def detect_video_in_a_process(video: Path, out_video: Path, setup: str = "") -> dict:
    """detect_video (fake detector, no TensorFlow) in a fresh process after `setup`; its error, frames and
    whether the annotated video exists. `detect` may be redefined by `setup`."""
    body = """
report = detect_video(sys.argv[1], detect, Path(sys.argv[2]), io.StringIO(), ("a",), 0.5, progress=False)
result = {"error": report.error, "frames": report.frames, "exists": Path(sys.argv[2]).exists()}
"""
    imports = ("import io\nfrom pathlib import Path\nfrom ssd.deploy.video import detect_video\n"
               + _NO_DETECTIONS_SOURCE + "detect = no_detections\n" + setup)
    return hf.measure(imports, body, video, out_video, timeout=60)["result"]


def test_a_video_writer_that_fails_to_open_or_silently_is_named_and_its_partial_file_removed(tmp_path):
    """OpenCV's VideoWriter says nothing when it cannot write: a folder gone (isOpened() is False), a
    full disk (RLIMIT_FSIZE: writes fail with EFBIG, the mp4 ends without its index) or the file
    removed under it (the frames go to an unlinked file) each produced no video, and exit 0."""
    video = write_synthetic_video(tmp_path / "clip.mp4", num_frames=6, fps=10.0, width=64, height=64)
    gone = tmp_path / "gone" / "clip.mp4"
    result = detect_video_in_a_process(video, gone)
    assert result == {"error": f"cannot write video {gone}: OpenCV's mp4v writer did not open it (64x64); is its "
                               "folder writable?", "frames": 0, "exists": False}
    full_disk = "import resource, signal\nsignal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n" \
                "resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))\n"
    removed = "def detect(images):\n    Path(sys.argv[2]).unlink(missing_ok=True)\n    return no_detections(images)\n"
    for name, setup, what in (("full", full_disk, "the partial file was removed"),
                              ("removed", removed, "the file is gone")):
        out = tmp_path / name / "clip.mp4"
        out.parent.mkdir()
        result = detect_video_in_a_process(video, out, setup)
        assert result["frames"] == 6 and not result["exists"], result
        assert result["error"].startswith(f"could not write video {out}: 0 of 6 frames can be read back ({what}; "), \
            result
    fine = tmp_path / "fine" / "clip.mp4"
    fine.parent.mkdir()
    assert detect_video_in_a_process(video, fine) == {"error": None, "frames": 6, "exists": True}
    frames, _, _, count = read_video(fine)
    assert len(frames) == count == 6


def run_detect_with_file_size_limit(args: list[str], limit: int) -> tuple[int, str]:
    """detect.py in a process whose files may not grow past `limit` bytes (RLIMIT_FSIZE, the signal
    ignored so a write fails with EFBIG): a full disk, as far as our writes can tell, without root."""
    code = ("import resource, signal, sys\nfrom ssd.cli.detect import main\n"
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))\nsys.exit(main(sys.argv[1:]))\n")
    run = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)
    return run.returncode, run.stderr


@pytest.mark.slow
def test_a_full_disk_under_out_is_one_line_and_leaves_no_partial_file(graph_dir, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    noise = np.random.default_rng(0).integers(0, 256, (300, 300, 3), np.uint8)
    for k in range(6):
        cv2.imwrite(str(images / f"{k}.jpg"), noise)
    graph = str(graph_dir / "frozen_inference_graph.pb")
    out = tmp_path / "drawn"
    code, err = run_detect_with_file_size_limit([str(images), "--graph", graph, "--out", str(out), "--quiet"], 30_000)
    assert code == 1 and "Traceback" not in err
    for k in range(6):
        assert f"error: could not write annotated image {out / f'{k}.jpg'} (" in err and "partial file was removed" in err
    assert sorted(p.name for p in out.iterdir()) == ["detections.jsonl"]  # no half-written JPEG
    out = tmp_path / "lines"
    code, err = run_detect_with_file_size_limit([str(images), "--graph", graph, "--out", str(out), "--quiet",
                                                 "--no-draw"], 400)
    errors = [line for line in err.splitlines() if line.startswith("error")]
    assert code == 1 and "Traceback" not in err and len(errors) == 1, err
    assert errors[0].startswith(f"error: --out {out}: File too large while writing {out / 'detections.jsonl'} (")
    assert "free some space or choose another --out" in errors[0]
    assert list(out.iterdir()) == []
    video, out = tmp_path / "noise.avi", tmp_path / "video"  # the annotated noise outgrows the limit, its lines not
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (160, 120))
    for k in range(4):
        writer.write(np.random.default_rng(k).integers(0, 256, (120, 160, 3), np.uint8))
    writer.release()
    code, err = run_detect_with_file_size_limit([str(video), "--graph", graph, "--out", str(out), "--quiet"], 30_000)
    errors = [line for line in err.splitlines() if line.startswith("error")]
    assert code == 1 and "Traceback" not in err and len(errors) == 1, err
    assert errors[0].startswith(f"error: could not write video {out / 'noise.mp4'}: 0 of 4 frames can be read back "
                                "(the partial file was removed; "), err
    assert sorted(p.name for p in out.iterdir()) == ["noise.jsonl"]
