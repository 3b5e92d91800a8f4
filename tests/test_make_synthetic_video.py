"""The synthetic tracking video's ground truth: identities, crossings, exits and returns, difficulty."""

from __future__ import annotations

import numpy as np

from ssd.mot import read_mot
from ssd.overlap import iou_matrix
from ssd_datasets.synthetic import MIN_VISIBLE
from ssd_datasets.synthetic_video import main, synthetic_scene


def test_ground_truth_file_follows_the_scene(tmp_path):
    video, gt = tmp_path / "clip.mp4", tmp_path / "seq" / "gt" / "gt.txt"
    assert main(["--out", str(video), "--gt", str(gt), "--frames", "40", "--width", "160", "--height", "120"]) == 0
    rows = read_mot(gt)
    scene = list(synthetic_scene(40, 160, 120))
    assert rows.frames.max() == 40 and len(rows.frames) == sum(len(truth.ids) for _, truth in scene)
    last = rows.frames == 40
    np.testing.assert_allclose(rows.boxes_xyxy[last], scene[-1][1].boxes_xyxy, atol=0.01)
    assert rows.classes[last].tolist() == scene[-1][1].class_ids.tolist()


def test_identities_cross_leave_return_and_change_speed():
    scene = [truth for _, truth in synthetic_scene(300, 160, 120, seed=3)]
    frames_of = {}
    for t, truth in enumerate(scene):
        assert len(set(truth.ids.tolist())) == len(truth.ids)
        assert np.all((truth.boxes_xyxy >= 0) & (truth.boxes_xyxy <= [160, 120, 160, 120]))
        for i in truth.ids.tolist():
            frames_of.setdefault(i, []).append(t)
    # the first two objects share a class and overlap at some point (they cross)
    first_two = [t for t in scene if {1, 2} <= set(t.ids.tolist())]
    assert first_two[0].class_ids[first_two[0].ids == 1] == first_two[0].class_ids[first_two[0].ids == 2]
    overlaps = [iou_matrix(t.boxes_xyxy[t.ids == 1], t.boxes_xyxy[t.ids == 2])[0, 0] for t in first_two]
    assert max(overlaps) > 0.1
    # some object leaves the frame completely and comes back with its identity
    assert any(np.any(np.diff(frames) > 1) for frames in frames_of.values())
    # speeds change: over runs of 6 frames in which an object is wholly visible (so it cannot be
    # turning round outside), the average speed of some object varies by more than half
    speeds = {}
    for t in range(len(scene) - 5):
        for i in scene[t].ids.tolist():
            window = [scene[u] for u in range(t, t + 6)]
            if all(i in w.ids and w.visibilities[w.ids == i][0] == 1.0 for w in window):
                first, last = ((w.boxes_xyxy[w.ids == i][0, :2] + w.boxes_xyxy[w.ids == i][0, 2:]) / 2
                               for w in (window[0], window[5]))
                speeds.setdefault(i, []).append(np.linalg.norm(last - first) / 5)
    assert any(max(v) > 1.5 * min(v) + 0.5 for v in speeds.values())


def test_visibility_and_difficulty():
    for _, truth in synthetic_scene(60, 160, 120, seed=1, num_objects=6):
        assert np.all((truth.visibilities > 0) & (truth.visibilities <= 1))
        assert not np.any(truth.considered & (truth.visibilities < MIN_VISIBLE))
