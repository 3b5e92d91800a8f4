"""Tracking metrics from the reference implementation: TrackEval (the HOTA / MOTChallenge authors' code).

`evaluate_mot(gt, results)` scores one sequence given as MOTChallenge files (`ssd.mot`): TrackEval's
MOTChallenge 2D-box dataset reads them and does its own preprocessing, and its HOTA, CLEAR (MOTA,
ID switches) and Identity (IDF1) metric classes score them. The protocol is MOTChallenge's:
one class (results carry no class), a match needs IoU >= 0.5 for CLEAR and Identity; HOTA is
averaged over IoU thresholds 0.05 ... 0.95. Our ground truth has object classes in its class
column, which MOTChallenge's preprocessing reads as its own (pedestrian, distractors, ...), so the
files are handed over with that column restated in MOTChallenge's terms: a box to consider is a
"pedestrian", a box marked consider = 0 a "distractor" -- TrackEval then drops it from the ground
truth and drops the result box matched to it, i.e. ignores it both ways.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ssd.mot import gt_lines, read_mot, result_lines

_PEDESTRIAN, _DISTRACTOR = 1, 8  # MOTChallenge class ids
_SEQUENCE, _TRACKER = "sequence", "tracker"

# The figures reported, by name: (TrackEval metric, field). HOTA's fields are arrays over the IoU
# thresholds; their mean is the reported figure, as in TrackEval's summaries.
SUMMARY_FIELDS = {
    "HOTA": ("HOTA", "HOTA"), "DetA": ("HOTA", "DetA"), "AssA": ("HOTA", "AssA"),
    "MOTA": ("CLEAR", "MOTA"), "MOTP": ("CLEAR", "MOTP"), "IDF1": ("Identity", "IDF1"),
    "IDP": ("Identity", "IDP"), "IDR": ("Identity", "IDR"), "ID_switches": ("CLEAR", "IDSW"),
    "fragmentations": ("CLEAR", "Frag"), "true_positives": ("CLEAR", "CLR_TP"), "misses": ("CLEAR", "CLR_FN"),
    "false_positives": ("CLEAR", "CLR_FP"), "mostly_tracked": ("CLEAR", "MT"), "mostly_lost": ("CLEAR", "ML"),
}  # fmt: skip
COUNT_FIELDS = ("ID_switches", "fragmentations", "true_positives", "misses", "false_positives",
                "mostly_tracked", "mostly_lost")


def evaluate_mot(gt_file: str | Path, results_file: str | Path, num_frames: int | None = None) -> dict[str, Any]:
    """HOTA, MOTA, IDF1, ID switches and the counts behind them for one sequence (`SUMMARY_FIELDS`).

    Args:
        gt_file: MOTChallenge ground truth (frame, id, box, consider, class, visibility).
        results_file: MOTChallenge results (frame, id, box, score, -1, -1, -1).
        num_frames: frames in the sequence (default: the last frame either file mentions).
    Ratios are in [0, 1] (MOTA may be negative); counts are ints.
    """
    import trackeval  # imported here: only tracking evaluation needs it

    gt, results = read_mot(gt_file), read_mot(results_file)
    last = int(max(gt.frames.max(initial=0), results.frames.max(initial=0)))
    num_frames = last if num_frames is None else num_frames
    if num_frames < max(last, 1):
        raise ValueError(f"num_frames must cover every frame of {gt_file} and {results_file} "
                         f"(the last is {last}), got {num_frames}")
    quiet = {"PRINT_CONFIG": False}
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        root = Path(tmp)
        (root / "gt" / _SEQUENCE / "gt").mkdir(parents=True)
        (root / "trackers" / _TRACKER / "data").mkdir(parents=True)
        classes = np.where(gt.confidences != 0, _PEDESTRIAN, _DISTRACTOR)
        (root / "gt" / _SEQUENCE / "gt" / "gt.txt").write_text("".join(
            gt_lines(f, gt.ids[k], gt.boxes_xyxy[k], gt.confidences[k], classes[k], gt.visibilities[k])
            for f, k in _by_frame(gt.frames)))
        (root / "trackers" / _TRACKER / "data" / f"{_SEQUENCE}.txt").write_text("".join(
            result_lines(f, results.ids[k], results.boxes_xyxy[k], results.confidences[k])
            for f, k in _by_frame(results.frames)))
        dataset = trackeval.datasets.MotChallenge2DBox({
            **quiet, "GT_FOLDER": str(root / "gt"), "TRACKERS_FOLDER": str(root / "trackers"),
            "SKIP_SPLIT_FOL": True, "SEQ_INFO": {_SEQUENCE: num_frames}, "TRACKERS_TO_EVAL": [_TRACKER],
            "BENCHMARK": "MOT17", "DO_PREPROC": True,
        })  # fmt: skip
        data = dataset.get_preprocessed_seq_data(dataset.get_raw_seq_data(_TRACKER, _SEQUENCE), "pedestrian")
        metrics = [trackeval.metrics.HOTA(quiet), trackeval.metrics.CLEAR(quiet), trackeval.metrics.Identity(quiet)]
        scores = {metric.get_name(): metric.eval_sequence(data) for metric in metrics}
    summary: dict[str, Any] = {name: float(np.mean(scores[metric][field]))
                               for name, (metric, field) in SUMMARY_FIELDS.items()}
    for name in COUNT_FIELDS:
        summary[name] = int(round(summary[name]))
    summary["frames"] = num_frames
    return summary


def _by_frame(frames: np.ndarray):
    """(frame, indices of its rows) for each frame present, in order."""
    for frame in np.unique(frames):
        yield int(frame), np.flatnonzero(frames == frame)


def format_summary(summary: dict[str, Any]) -> str:
    """Two lines: the headline figures in percent, then the counts."""
    ratios = "  ".join(f"{name} {100 * summary[name]:.1f}" for name in ("HOTA", "MOTA", "IDF1", "DetA", "AssA"))
    counts = "  ".join(f"{name.replace('_', ' ')} {summary[name]}" for name in COUNT_FIELDS)
    return f"{ratios}\n{counts}"
