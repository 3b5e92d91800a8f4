"""ByteTracker on hand-built detection sequences; the assignment against brute force; the Kalman filter."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from ssd.deploy import kalman
from ssd.deploy.tracking import ByteTracker, TrackerOptions, assign
from ssd.overlap import iou_matrix


def box(cx: float, cy: float, w: float = 40.0, h: float = 40.0) -> list[float]:
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def run(tracker: ByteTracker, frames: list[list[tuple[list[float], float, int]]]) -> list[list[int]]:
    """Feed frames of (box, score, class) detections; the ids returned per frame."""
    out = []
    for detections in frames:
        boxes = np.array([d[0] for d in detections], np.float64).reshape(-1, 4)
        ids = tracker.update(boxes, np.array([d[1] for d in detections]), np.array([d[2] for d in detections]))
        out.append(ids.tolist())
    return out


def test_two_objects_crossing_keep_their_ids():
    # Same class, same size, opposite directions along one row, 6 px/frame: around the crossing
    # the boxes nearly cover each other, so only the motion model can tell them apart.
    frames = [[(box(100 + 6 * t, 100), 0.9, 1), (box(223 - 6 * t, 100), 0.9, 1)] for t in range(40)]
    ids = run(ByteTracker(), frames)
    assert ids[0] == [1, 2]
    assert all(frame == [1, 2] for frame in ids), ids


def test_without_motion_model_the_crossing_would_swap():
    # The control for the test above: just after the crossing each object's box overlaps the
    # other's previous box more than its own, so matching to the last box would swap the ids.
    t = 11  # A at 160 and B at 163 in frame 10; A at 166 and B at 157 in frame 11
    a_prev, b_prev = np.array([box(100 + 6 * (t - 1), 100)]), np.array([box(223 - 6 * (t - 1), 100)])
    a_now = np.array([box(100 + 6 * t, 100)])
    assert iou_matrix(a_now, b_prev)[0, 0] > iou_matrix(a_now, a_prev)[0, 0]


@pytest.mark.parametrize("missed", [1, 10, 29])
def test_object_missed_for_fewer_frames_than_the_buffer_keeps_its_id(missed):
    tracker = ByteTracker(TrackerOptions(track_buffer=30))
    before = [[(box(100 + 3 * t, 100), 0.9, 1)] for t in range(10)]
    gap = [[] for _ in range(missed)]
    after = [[(box(100 + 3 * t, 100), 0.9, 1)] for t in range(10 + missed, 20 + missed)]
    ids = run(tracker, before + gap + after)
    assert all(frame == [1] for frame in ids[:10])
    assert all(frame == [1] for frame in ids[10 + missed:]), ids[10 + missed:]


def test_object_missed_for_longer_than_the_buffer_gets_a_new_id():
    tracker = ByteTracker(TrackerOptions(track_buffer=5))
    before = [[(box(100, 100), 0.9, 1)] for _ in range(5)]
    after = [[(box(100, 100), 0.9, 1)] for _ in range(3)]
    ids = run(tracker, before + [[] for _ in range(6)] + after)
    # a new track: tentative on its first frame (no id), confirmed with id 2 on its second
    assert ids[-3:] == [[0], [2], [2]]


def test_buffer_counts_at_the_video_frame_rate():
    assert ByteTracker(TrackerOptions(track_buffer=30), frame_rate=60).max_lost == 60
    assert ByteTracker(TrackerOptions(track_buffer=30), frame_rate=15).max_lost == 15


def test_low_score_detection_continues_a_track():
    frames = [[(box(100 + 2 * t, 100), 0.9, 1)] for t in range(5)]
    frames += [[(box(100 + 2 * t, 100), 0.3, 1)] for t in range(5, 10)]  # occluded: score drops
    frames += [[(box(100 + 2 * t, 100), 0.9, 1)] for t in range(10, 12)]
    assert all(frame == [1] for frame in run(ByteTracker(), frames))


def test_low_score_detection_never_starts_a_track():
    # alone for many frames, and next to a tracked object of another class
    frames = [[(box(100, 100), 0.5, 1), (box(300, 300), 0.9, 2)] for _ in range(20)]
    ids = run(ByteTracker(), frames)
    assert all(frame == [0, 1] for frame in ids), ids


def test_detection_between_high_and_new_track_score_does_not_start_a_track():
    frames = [[(box(100, 100), 0.65, 1)] for _ in range(10)]  # >= high_score 0.6, < new_track_score 0.7
    assert all(frame == [0] for frame in run(ByteTracker(), frames))


def test_below_low_score_is_ignored_even_for_a_tracked_object():
    frames = [[(box(100, 100), 0.9, 1)] for _ in range(3)] + [[(box(100, 100), 0.05, 1)]]
    assert run(ByteTracker(), frames)[-1] == [0]


def test_tracks_of_different_classes_never_merge():
    # A class-1 object, then a class-2 object at the very same place: a new track, never id 1.
    frames = [[(box(100, 100), 0.9, 1)] for _ in range(5)] + [[(box(100, 100), 0.9, 2)] for _ in range(5)]
    ids = run(ByteTracker(), frames)
    assert ids[:5] == [[1]] * 5
    assert ids[5:] == [[0], [2], [2], [2], [2]]


def test_two_classes_on_top_of_each_other_keep_their_ids():
    frames = [[(box(100 + t, 100), 0.9, 1), (box(100 + t, 100), 0.8, 2)] for t in range(10)]
    frames += [[(box(110, 100), 0.8, 2), (box(110, 100), 0.9, 1)]]  # the order of detections changes
    ids = run(ByteTracker(), frames)
    assert all(frame == [1, 2] for frame in ids[:10])
    assert ids[10] == [2, 1]


def test_tentative_track_needs_a_second_frame_after_the_first():
    frames = [[(box(100, 100), 0.9, 1)]] + [[(box(100, 100), 0.9, 1), (box(300, 100), 0.9, 1)] for _ in range(3)]
    ids = run(ByteTracker(), frames)
    assert ids == [[1], [1, 0], [1, 2], [1, 2]]


def test_a_tentative_track_without_a_second_detection_is_dropped():
    frames = [[(box(100, 100), 0.9, 1)], [(box(300, 100), 0.9, 1)], [], [(box(300, 100), 0.9, 1)]]
    ids = run(ByteTracker(), frames)
    assert ids[1] == [0] and ids[3] == [0]  # started again from scratch: tentative once more


def test_empty_frames_and_shapes():
    tracker = ByteTracker()
    assert tracker.update(np.zeros((0, 4)), np.zeros(0), np.zeros(0, int)).shape == (0,)
    with pytest.raises(ValueError, match="must agree"):
        tracker.update(np.zeros((2, 4)), np.zeros(1), np.zeros(2, int))


@pytest.mark.parametrize("field, value", [("low_score", 0.0), ("low_score", 0.7), ("high_score", 1.5),
                                          ("match_iou", 0.0), ("track_buffer", -1), ("new_track_score", 2.0)])
def test_options_refuse_bad_values(field, value):
    with pytest.raises(ValueError, match=field):
        TrackerOptions(**{field: value})


def test_default_options_are_the_papers():
    o = TrackerOptions()
    assert (o.high_score, o.low_score, o.match_iou, o.track_buffer) == (0.6, 0.1, 0.2, 30)


def _brute_force(similarity: np.ndarray, minimum: float) -> float:
    """The best total gain (similarity - minimum) over every matching of admissible pairs."""
    rows, cols = similarity.shape
    best = 0.0
    for k in range(1, min(rows, cols) + 1):
        for rs in itertools.combinations(range(rows), k):
            for cs in itertools.permutations(range(cols), k):
                values = similarity[list(rs), list(cs)]
                if np.all(values >= minimum):
                    best = max(best, float(np.sum(values - minimum)))
    return best


@pytest.mark.parametrize("seed", range(20))
def test_assign_finds_the_best_matching(seed):
    rng = np.random.default_rng(seed)
    similarity = rng.uniform(0, 1, (int(rng.integers(1, 5)), int(rng.integers(1, 5))))
    similarity[rng.uniform(size=similarity.shape) < 0.4] = 0.0
    rows, cols = assign(similarity, 0.3)
    assert len(set(rows.tolist())) == len(rows) and len(set(cols.tolist())) == len(cols)
    assert np.all(similarity[rows, cols] >= 0.3)
    assert np.sum(similarity[rows, cols] - 0.3) == pytest.approx(_brute_force(similarity, 0.3))


def test_assign_prefers_one_good_pair_over_two_poor_ones():
    # gains: (0,0) 0.75 alone beats (0,1) + (1,0) = 0.05 + 0.05
    similarity = np.array([[0.95, 0.25], [0.25, 0.0]])
    rows, cols = assign(similarity, 0.2)
    assert list(zip(rows.tolist(), cols.tolist())) == [(0, 0)]


def test_kalman_box_conversions_round_trip():
    boxes = np.array([[10.0, 20.0, 50.0, 100.0], [0.0, 0.0, 1.0, 2.0]])
    xyah = kalman.xyxy_to_xyah(boxes)
    np.testing.assert_allclose(xyah[0], [30.0, 60.0, 0.5, 80.0])
    np.testing.assert_allclose(kalman.xyah_to_xyxy(xyah), boxes)


def test_kalman_learns_a_constant_velocity():
    true = np.array([[100.0 + 5 * t, 50.0 - 2 * t, 0.5, 80.0 + t] for t in range(30)])
    mean, cov = kalman.initiate(true[:1])
    for t in range(1, 30):
        mean, cov = kalman.predict(mean, cov)
        mean, cov = kalman.update(mean, cov, true[t : t + 1])
    np.testing.assert_allclose(mean[0, 4:], [5.0, -2.0, 0.0, 1.0], atol=0.05)
    predicted, _ = kalman.predict(mean, cov)
    np.testing.assert_allclose(predicted[0, :4], true[-1] + [5.0, -2.0, 0.0, 1.0], atol=0.1)
    assert np.allclose(cov, cov.transpose(0, 2, 1)) and np.all(np.linalg.eigvalsh(cov) > 0)
