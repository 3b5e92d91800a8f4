"""Multi-object tracking after the graph: ByteTrack's association (Zhang et al., ECCV 2022), per class.

It runs on NumPy arrays of one frame's detections, so every runtime (TensorFlow, ONNX, OpenVINO,
TFLite, INT8) gets it. Each frame:

1. every track's box is predicted by a constant-velocity Kalman filter (`ssd.deploy.kalman`);
2. detections with score >= `high_score` are matched to the confirmed tracks, tracked or lost
   (similarity IoU, times the score when `fuse_score`; Hungarian assignment; pairs below
   `match_iou` rejected);
3. detections with `low_score` <= score < `high_score` (occluded or blurred objects, mostly) are
   matched by IoU alone to the tracks still unmatched that were tracked in the last frame; the
   ones left over are dropped as background, so a low-score detection continues a track but
   never starts one;
4. tentative tracks (started in the previous frame) are matched to the high-score detections left;
   matched ones are confirmed and get their id, the others are dropped;
5. high-score detections still left with score >= `new_track_score` start tentative tracks
   (on the very first frame they are confirmed at once);
6. tracked tracks left unmatched become lost; a lost track is kept for `track_buffer` frames
   (at 30 fps; scaled to the video's rate) and found again by step 2 with its old id;
7. a tracked and a lost track of one class overlapping by IoU > `duplicate_iou` are one object
   twice: the one tracked for the shorter time goes.

A track only ever matches detections of its own class (the similarity across classes is 0), so
tracks of different classes never merge. Ids are 1, 2, ... in the order tracks are confirmed.
Boxes are "xyxy" pixels of the frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ssd.deploy import kalman
from ssd.overlap import iou_matrix

TENTATIVE, TRACKED, LOST = 0, 1, 2
REFERENCE_FPS = 30.0  # the frame rate `track_buffer` is counted at


@dataclass(frozen=True)
class TrackerOptions:
    """ByteTrack's thresholds. Defaults: the paper's (tau_high 0.6, tau_low 0.1, IoU 0.2, 30 frames)
    and, where the paper is silent, its public code's (new tracks at tau_high + 0.1, the second and
    tentative associations at IoU 0.5 and 0.3, score fusion, duplicates at IoU 0.85)."""

    high_score: float = 0.6  # detections at or above it are associated first
    low_score: float = 0.1  # below it detections are ignored; between the two they only continue tracks
    new_track_score: float = 0.7  # an unmatched high-score detection starts a track at or above it
    match_iou: float = 0.2  # first association: least similarity of a pair
    low_match_iou: float = 0.5  # second association (low-score detections, IoU alone)
    tentative_match_iou: float = 0.3  # a tentative track's second frame
    track_buffer: int = 30  # frames (at 30 fps) a lost track waits to be found again
    fuse_score: bool = True  # first and tentative associations: similarity = IoU x detection score
    duplicate_iou: float = 0.85  # a tracked and a lost track overlapping more are the same object

    def __post_init__(self):
        if not 0.0 < self.low_score <= self.high_score <= 1.0:
            raise ValueError(f"TrackerOptions: need 0 < low_score <= high_score <= 1, got low_score "
                             f"{self.low_score}, high_score {self.high_score}")
        if not 0.0 <= self.new_track_score <= 1.0:
            raise ValueError(f"TrackerOptions: new_track_score must be in [0, 1], got {self.new_track_score}")
        for name in ("match_iou", "low_match_iou", "tentative_match_iou", "duplicate_iou"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"TrackerOptions: {name} must be in (0, 1], got {getattr(self, name)}")
        if self.track_buffer < 0:
            raise ValueError(f"TrackerOptions: track_buffer must be >= 0 frames, got {self.track_buffer}")


def assign(similarity: np.ndarray, minimum: float) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (rows, cols) maximising the summed similarity [R, C], each pair's similarity >= `minimum`.

    The gain of a pair is similarity - minimum; a pair below `minimum` is never taken, and an
    assignment may leave rows and columns unmatched (as LAPJV with a cost limit does): with
    non-negative gains a maximum-weight full assignment is a maximum-weight matching once its
    zero-gain pairs are dropped. Rows and columns with no admissible pair are left out first, so
    the solver sees only the contested part.
    """
    from scipy.optimize import linear_sum_assignment  # here: a CLI's --help need not load SciPy

    admissible = similarity >= minimum
    rows = np.flatnonzero(admissible.any(axis=1))
    cols = np.flatnonzero(admissible.any(axis=0))
    if rows.size == 0:
        return rows, cols
    gain = np.where(admissible[np.ix_(rows, cols)], similarity[np.ix_(rows, cols)] - minimum, 0.0)
    r, c = linear_sum_assignment(gain, maximize=True)
    keep = admissible[rows[r], cols[c]]
    return rows[r[keep]], cols[c[keep]]


class ByteTracker:
    """ByteTrack over a video, one `update` per frame; tracks of different classes never mix."""

    def __init__(self, options: TrackerOptions | None = None, frame_rate: float = REFERENCE_FPS):
        if not frame_rate > 0:
            raise ValueError(f"ByteTracker: frame_rate must be > 0, got {frame_rate}")
        self.options = options or TrackerOptions()
        self.max_lost = int(frame_rate / REFERENCE_FPS * self.options.track_buffer)
        self.frame = 0
        self._next_id = 1
        # One row per track (struct of arrays, so a frame costs a few vector operations).
        self.means = np.zeros((0, 8))
        self.covariances = np.zeros((0, 8, 8))
        self.class_ids = np.zeros(0, int)
        self.track_ids = np.zeros(0, int)  # 0 while tentative
        self.states = np.zeros(0, np.int8)
        self.first_frames = np.zeros(0, int)
        self.last_frames = np.zeros(0, int)  # the last frame a detection was assigned

    @property
    def boxes(self) -> np.ndarray:
        """The tracks' current boxes float [T, 4] "xyxy" (Kalman means)."""
        return kalman.xyah_to_xyxy(self.means)

    def update(self, boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray) -> np.ndarray:
        """Track one frame's detections; the track id of each detection (int [N]), 0 where it has none.

        Args:
            boxes: float [N, 4] "xyxy" pixels.
            scores: float [N].
            class_ids: int [N].
        Returns 0 for detections below `low_score`, for low-score detections no track took, and
        for detections that only started a tentative track.
        """
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        scores = np.asarray(scores, np.float64).reshape(-1)
        class_ids = np.asarray(class_ids).astype(int).reshape(-1)
        if not len(boxes) == len(scores) == len(class_ids):
            raise ValueError(f"ByteTracker.update: boxes [N, 4], scores [N] and class_ids [N] must agree, got "
                             f"{len(boxes)}, {len(scores)} and {len(class_ids)} rows")
        self.frame += 1
        opts = self.options
        was_tracked = self.states == TRACKED
        if len(self.means):
            means = self.means.copy()
            means[~was_tracked, 7] = 0.0  # a track not seen last frame stops growing or shrinking
            self.means, self.covariances = kalman.predict(means, self.covariances)  # 1
        owner = np.full(len(boxes), -1)  # the track (row) each detection went to
        high = np.flatnonzero(scores >= opts.high_score)
        low = np.flatnonzero((scores >= opts.low_score) & (scores < opts.high_score))
        confirmed = np.flatnonzero(self.states != TENTATIVE)

        # 2: high-score detections <-> confirmed tracks (tracked or lost).
        rows, cols = assign(self._similarity(confirmed, high, boxes, scores, class_ids, opts.fuse_score),
                            opts.match_iou)
        owner[high[cols]] = confirmed[rows]
        # 3: low-score detections <-> confirmed tracks left that were tracked in the last frame.
        left = np.setdiff1d(confirmed, confirmed[rows])
        left = left[was_tracked[left]]
        rows, cols = assign(self._similarity(left, low, boxes, scores, class_ids, False), opts.low_match_iou)
        owner[low[cols]] = left[rows]
        # 4: tentative tracks <-> high-score detections left.
        tentative = np.flatnonzero(self.states == TENTATIVE)
        high_left = high[owner[high] < 0]
        rows, cols = assign(self._similarity(tentative, high_left, boxes, scores, class_ids, opts.fuse_score),
                            opts.tentative_match_iou)
        owner[high_left[cols]] = tentative[rows]

        matched = owner >= 0
        self._correct(owner[matched], boxes[matched])
        keep = np.ones(len(self.states), bool)
        keep[np.setdiff1d(tentative, owner[matched])] = False  # tentative tracks get one chance
        unmatched = np.ones(len(self.states), bool)
        unmatched[owner[matched]] = False
        self.states[unmatched & (self.states == TRACKED)] = LOST  # 6
        keep &= ~((self.states == LOST) & (self.frame - self.last_frames > self.max_lost))
        keep &= ~self._duplicates()  # 7
        # 5: new tentative tracks from the high-score detections nobody took.
        new = high_left[(owner[high_left] < 0) & (scores[high_left] >= opts.new_track_score)]
        track_of = self._compact(keep, owner)
        track_of[new] = self._start(boxes[new], class_ids[new])
        ids = np.zeros(len(boxes), int)
        has_track = track_of >= 0
        ids[has_track] = self.track_ids[track_of[has_track]]
        return ids

    def _similarity(self, tracks: np.ndarray, detections: np.ndarray, boxes: np.ndarray, scores: np.ndarray,
                    class_ids: np.ndarray, fuse_score: bool) -> np.ndarray:
        """Similarity [len(tracks), len(detections)]: IoU of predicted and detected boxes, x score if
        `fuse_score`, 0 across classes."""
        iou = iou_matrix(kalman.xyah_to_xyxy(self.means[tracks]), boxes[detections])
        if fuse_score:
            iou = iou * scores[detections][None, :]
        return np.where(self.class_ids[tracks][:, None] == class_ids[detections][None, :], iou, 0.0)

    def _correct(self, tracks: np.ndarray, boxes: np.ndarray) -> None:
        """Kalman update of the matched tracks with their detections; they are tracked now, and
        tentative ones are confirmed with the next ids."""
        if len(tracks) == 0:
            return
        self.means[tracks], self.covariances[tracks] = kalman.update(
            self.means[tracks], self.covariances[tracks], kalman.xyxy_to_xyah(boxes))
        newcomers = tracks[self.states[tracks] == TENTATIVE]
        self.track_ids[newcomers] = self._take_ids(len(newcomers))
        self.states[tracks] = TRACKED
        self.last_frames[tracks] = self.frame

    def _duplicates(self) -> np.ndarray:
        """Tracks (bool [T]) that repeat another of their class: a tracked and a lost track overlapping
        by IoU > duplicate_iou; of the pair, the one tracked for the shorter time goes."""
        tracked, lost = np.flatnonzero(self.states == TRACKED), np.flatnonzero(self.states == LOST)
        drop = np.zeros(len(self.states), bool)
        if len(tracked) == 0 or len(lost) == 0:
            return drop
        boxes = self.boxes
        same = (iou_matrix(boxes[tracked], boxes[lost]) > self.options.duplicate_iou) & \
               (self.class_ids[tracked][:, None] == self.class_ids[lost][None, :])
        for a, b in zip(*np.nonzero(same)):
            t, l = tracked[a], lost[b]
            age = self.last_frames - self.first_frames
            drop[l if age[t] > age[l] else t] = True
        return drop

    def _compact(self, keep: np.ndarray, owner: np.ndarray) -> np.ndarray:
        """Drop the tracks not kept; the new row of each detection's track (int [N]), -1 for none."""
        new_row = np.cumsum(keep) - 1
        has = owner >= 0
        has[has] = keep[owner[has]]
        track_of = np.full(len(owner), -1)
        track_of[has] = new_row[owner[has]]
        for name in ("means", "covariances", "class_ids", "track_ids", "states", "first_frames", "last_frames"):
            setattr(self, name, getattr(self, name)[keep])
        return track_of

    def _start(self, boxes: np.ndarray, class_ids: np.ndarray) -> np.ndarray:
        """New tracks from detections (tentative, or confirmed on the first frame); the rows of those
        that have an id now (int [K], -1 for tentative ones)."""
        count = len(boxes)
        means, covariances = kalman.initiate(kalman.xyxy_to_xyah(boxes))
        first = self.frame == 1
        rows = len(self.states) + np.arange(count)
        self.means = np.concatenate([self.means, means])
        self.covariances = np.concatenate([self.covariances, covariances])
        self.class_ids = np.concatenate([self.class_ids, class_ids])
        self.track_ids = np.concatenate([self.track_ids, self._take_ids(count) if first else np.zeros(count, int)])
        self.states = np.concatenate([self.states, np.full(count, TRACKED if first else TENTATIVE, np.int8)])
        self.first_frames = np.concatenate([self.first_frames, np.full(count, self.frame)])
        self.last_frames = np.concatenate([self.last_frames, np.full(count, self.frame)])
        return rows if first else np.full(count, -1)

    def _take_ids(self, count: int) -> np.ndarray:
        ids = np.arange(self._next_id, self._next_id + count)
        self._next_id += count
        return ids
