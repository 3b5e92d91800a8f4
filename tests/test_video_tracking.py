"""Tracking inside the video pipeline, with a detector that returns the synthetic video's ground truth."""

from __future__ import annotations

import json

import cv2
import numpy as np

from ssd.deploy.tracking import TrackerOptions
from ssd.deploy.video import detect_video
from ssd.evaluation.tracking import evaluate_mot
from ssd.mot import read_mot
from ssd.visualize import Trails
from ssd_datasets.synthetic import SYNTHETIC_CLASSES
from ssd_datasets.synthetic_video import synthetic_scene, write_synthetic_video

WIDTH, HEIGHT, FRAMES = 160, 120, 24


class TruthDetector:
    """A DetectFn that answers each call with the next frames' ground-truth boxes (score 0.9)."""

    def __init__(self, truths, max_detections: int = 10):
        self.truths = truths
        self.next = 0
        self.max_detections = max_detections

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        batch = len(images)
        boxes = np.zeros((batch, self.max_detections, 4), np.float32)
        scores = np.zeros((batch, self.max_detections), np.float32)
        classes = np.zeros((batch, self.max_detections), np.float32)
        count = np.zeros(batch, np.float32)
        for b in range(batch):
            truth = self.truths[self.next]
            self.next += 1
            n = len(truth.ids)
            x0, y0, x1, y1 = truth.boxes_xyxy.T
            boxes[b, :n] = np.stack([y0 / HEIGHT, x0 / WIDTH, y1 / HEIGHT, x1 / WIDTH], axis=1)
            scores[b, :n], classes[b, :n], count[b] = 0.9, truth.class_ids, n
        return {"detection_boxes": boxes, "detection_scores": scores, "detection_classes": classes,
                "num_detections": count}


def test_tracked_video_has_ids_in_json_mot_file_and_report(tmp_path):
    gt = tmp_path / "gt.txt"
    video = write_synthetic_video(tmp_path / "clip.mp4", FRAMES, 10.0, WIDTH, HEIGHT, gt_path=gt)
    truths = [truth for _, truth in synthetic_scene(FRAMES, WIDTH, HEIGHT)]
    with open(tmp_path / "clip.jsonl", "w") as jsonl, open(tmp_path / "clip_mot.txt", "w") as mot:
        report = detect_video(str(video), TruthDetector(truths), tmp_path / "annotated.mp4", jsonl,
                              SYNTHETIC_CLASSES, 0.1, batch_size=5, progress=False, track=TrackerOptions(), mot=mot)
    assert report.error is None and report.frames == FRAMES
    assert report.tracked and report.track_s > 0 and "tracker" in report.summary()
    lines = [json.loads(line) for line in (tmp_path / "clip.jsonl").read_text().splitlines()]
    # frame 1: every object starts a confirmed track at once, ids 1.. in detection order
    assert [d["track_id"] for d in lines[0]["detections"]] == list(range(1, len(truths[0].ids) + 1))
    assert all(d["track_id"] >= 1 for line in lines for d in line["detections"])
    rows = read_mot(tmp_path / "clip_mot.txt")
    assert rows.frames.min() == 1 and rows.frames.max() == FRAMES
    assert len(rows.frames) == sum(len(line["detections"]) for line in lines)
    # perfect detections: every considered object is found and keeps one id
    summary = evaluate_mot(gt, tmp_path / "clip_mot.txt", FRAMES)
    assert summary["misses"] == 0 and summary["ID_switches"] == 0
    capture = cv2.VideoCapture(str(tmp_path / "annotated.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == FRAMES
    capture.release()


def test_untracked_video_has_no_track_ids(tmp_path):
    video = write_synthetic_video(tmp_path / "clip.mp4", 6, 10.0, WIDTH, HEIGHT)
    truths = [truth for _, truth in synthetic_scene(6, WIDTH, HEIGHT)]
    with open(tmp_path / "clip.jsonl", "w") as jsonl:
        report = detect_video(str(video), TruthDetector(truths), None, jsonl, SYNTHETIC_CLASSES, 0.1,
                              progress=False)
    assert not report.tracked and "tracker" not in report.summary()
    line = json.loads((tmp_path / "clip.jsonl").read_text().splitlines()[0])
    assert line["detections"] and all("track_id" not in d for d in line["detections"])


def test_trails_follow_tracks_and_fade():
    trails = Trails(length=3)
    image = np.zeros((50, 50, 3), np.uint8)
    for x in (10, 20, 30):
        trails.update(np.array([7]), np.array([[x - 2, 23, x + 2, 27]], np.float64))
    trails.draw(image)
    assert image[25, 12:28].any(axis=1).all() and not image[10].any()  # a line along the centres
    for _ in range(3):
        trails.update(np.zeros(0, int), np.zeros((0, 4)))
    assert not trails.draw(np.zeros((50, 50, 3), np.uint8)).any()  # gone with its track
