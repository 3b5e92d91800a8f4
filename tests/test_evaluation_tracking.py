"""Tracking metrics through TrackEval against MOTA / IDF1 / HOTA worked out by hand; the MOT format."""

from __future__ import annotations

import json
import re

import hostile_files as hf
import numpy as np
import pytest

from ssd.evaluation.tracking import evaluate_mot
from ssd.mot import gt_lines, read_mot, result_lines

# Two objects over 4 frames, written by hand in the MOTChallenge layout: object 1 at A, object 2 at B.
GT = """\
1,1,11,11,20,20,1,1,1.0
1,2,101,11,20,20,1,3,1.0
2,1,11,11,20,20,1,1,1.0
2,2,101,11,20,20,1,3,1.0
3,1,11,11,20,20,1,1,1.0
3,2,101,11,20,20,1,3,1.0
4,1,11,11,20,20,1,1,1.0
4,2,101,11,20,20,1,3,1.0
"""
# The tracker: object 1 is id 10, then id 30 from frame 3 (one ID switch); object 2 is id 20 but
# missed in frame 3 (one miss); id 40 is a false positive in frames 2 and 4 on empty ground.
RESULTS = """\
1,10,11,11,20,20,0.9,-1,-1,-1
1,20,101,11,20,20,0.9,-1,-1,-1
2,10,11,11,20,20,0.9,-1,-1,-1
2,20,101,11,20,20,0.9,-1,-1,-1
2,40,201,201,20,20,0.9,-1,-1,-1
3,30,11,11,20,20,0.9,-1,-1,-1
4,30,11,11,20,20,0.9,-1,-1,-1
4,20,101,11,20,20,0.9,-1,-1,-1
4,40,201,201,20,20,0.9,-1,-1,-1
"""


@pytest.fixture
def files(tmp_path):
    gt, results = tmp_path / "gt.txt", tmp_path / "results.txt"
    gt.write_text(GT)
    results.write_text(RESULTS)
    return gt, results


def test_trackeval_figures_equal_the_hand_computed_ones(files):
    summary = evaluate_mot(*files)
    # CLEAR: 8 ground-truth boxes; 7 matched, 1 missed, 2 false positives, 1 switch (10 -> 30).
    assert (summary["true_positives"], summary["misses"], summary["false_positives"], summary["ID_switches"]) \
        == (7, 1, 2, 1)
    assert summary["MOTA"] == pytest.approx(1 - (1 + 2 + 1) / 8)  # 0.5
    # Identity: the best one-to-one id mapping is 1 <-> 10 (or 30): 2 frames, 2 <-> 20: 3 frames, so
    # IDTP 5, IDFN 8 - 5 = 3, IDFP 9 - 5 = 4, IDF1 = 2 IDTP / (2 IDTP + IDFN + IDFP).
    assert summary["IDF1"] == pytest.approx(10 / 17)
    # HOTA (every match has IoU 1, so all thresholds agree): DetA = TP / (TP + FN + FP) = 7 / 10;
    # AssA = mean over the 7 matches of TPA / (TPA + FNA + FPA): 4 matches of (1, 10) or (1, 30) at
    # 2 / (2 + 2 + 0), 3 matches of (2, 20) at 3 / (3 + 1 + 0).
    ass_a = (4 * 0.5 + 3 * 0.75) / 7
    assert summary["DetA"] == pytest.approx(0.7)
    assert summary["AssA"] == pytest.approx(ass_a)
    assert summary["HOTA"] == pytest.approx(np.sqrt(0.7 * ass_a))
    assert summary["frames"] == 4


def test_ground_truth_marked_not_to_consider_is_ignored_both_ways(files, tmp_path):
    gt, results = files
    # a third object under the false positive of frame 2, marked consider = 0: that box is no longer
    # a false positive, and nothing is missed in frames where no result covers it
    gt.write_text(GT + "2,3,201,201,20,20,0,2,0.1\n3,3,201,201,20,20,0,2,0.1\n")
    summary = evaluate_mot(gt, results)
    assert (summary["misses"], summary["false_positives"]) == (1, 1)


def test_a_matched_box_needs_iou_half(files, tmp_path):
    gt, results = files
    shifted = tmp_path / "shifted.txt"
    # id 20 shifted by 10 px of its 20: IoU 10*20 / (2*400 - 200) = 1/3 < 0.5, so a miss + a false positive
    shifted.write_text(RESULTS.replace(",20,101,11,", ",20,111,11,"))
    summary = evaluate_mot(gt, shifted)
    assert (summary["true_positives"], summary["misses"], summary["false_positives"]) == (4, 4, 5)


def test_num_frames_must_cover_the_files(files):
    with pytest.raises(ValueError, match="num_frames"):
        evaluate_mot(*files, num_frames=3)
    assert evaluate_mot(*files, num_frames=10)["frames"] == 10


def test_mot_lines_are_one_based_and_read_back():
    boxes = np.array([[0.0, 10.0, 20.0, 50.0]])
    assert result_lines(3, np.array([7]), boxes, np.array([0.5])) == "3,7,1.00,11.00,20.00,40.00,0.50000,-1,-1,-1\n"
    assert gt_lines(1, [2], boxes, [1], [4], [0.75]) == "1,2,1.00,11.00,20.00,40.00,1,4,0.7500\n"


def test_read_mot_round_trip(tmp_path):
    path = tmp_path / "gt.txt"
    path.write_text(GT)
    rows = read_mot(path)
    assert rows.frames.tolist() == [1, 1, 2, 2, 3, 3, 4, 4]
    np.testing.assert_allclose(rows.boxes_xyxy[1], [100.0, 10.0, 120.0, 30.0])
    assert rows.classes.tolist()[:2] == [1, 3]
    again = tmp_path / "again.txt"
    again.write_text("".join(gt_lines(f, rows.ids[rows.frames == f], rows.boxes_xyxy[rows.frames == f],
                                      rows.confidences[rows.frames == f], rows.classes[rows.frames == f],
                                      rows.visibilities[rows.frames == f]) for f in range(1, 5)))
    back = read_mot(again)
    np.testing.assert_allclose(back.boxes_xyxy, rows.boxes_xyxy)


@pytest.mark.parametrize("line, message", [
    ("1,2,3\n", "at least 7"),
    ("a,2,3,4,5,6,1\n", "comma-separated numbers"),
    ("0,2,3,4,5,6,1\n", "frame must be an integer >= 1"),
    ("1,2,3,4,-5,6,1\n", "width and height"),
    ("1,2,3,4,5,6,1\n1,2,3,4,5,6,1\n", "more than once in frame 1"),
])  # fmt: skip
def test_read_mot_names_the_file_and_line(tmp_path, line, message):
    path = tmp_path / "bad.txt"
    path.write_text(line)
    with pytest.raises(ValueError, match=message) as err:
        read_mot(path)
    assert "bad.txt" in str(err.value)


@pytest.mark.parametrize("kind", ["fifo", "zero"])
def test_read_mot_refuses_a_special_file_by_name_unread(tmp_path, kind):
    """A FIFO would block the read forever, a link to /dev/zero read without end."""
    path = tmp_path / "gt.txt"
    words = hf.make_special(path, kind)
    with pytest.raises(ValueError, match=re.escape(f"MOT file {path} {words}")):
        read_mot(path)


def test_read_mot_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.txt"):
        read_mot(tmp_path / "nothing.txt")


def test_command_prints_and_writes_json(files, tmp_path, capsys):
    from ssd.cli.evaluate_tracking import main

    gt, results = files
    assert main(["--gt", str(gt), "--results", str(results), "--json", str(tmp_path / "m.json")]) == 0
    assert "MOTA 50.0" in capsys.readouterr().out
    assert json.loads((tmp_path / "m.json").read_text())["ID_switches"] == 1
    assert main(["--gt", str(tmp_path / "none.txt"), "--results", str(results)]) == 2
    assert "none.txt does not exist" in capsys.readouterr().err
