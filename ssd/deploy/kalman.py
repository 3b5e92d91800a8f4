"""A constant-velocity Kalman filter on boxes, vectorised over tracks (NumPy).

The state of a track is (cx, cy, a, h, vcx, vcy, va, vh): box centre, aspect ratio a = width /
height, height, and their velocities per frame; a box "xyxy" is measured as (cx, cy, a, h). The
noise model is SORT's / DeepSORT's, which ByteTrack keeps: standard deviations proportional to the
box height (1/20 of it for positions, 1/160 for velocities; small constants for the aspect,
which barely changes), so that a filter tuned once works at every object size.
Arrays: means float64 [T, 8], covariances float64 [T, 8, 8].
"""

from __future__ import annotations

import numpy as np

POSITION_NOISE = 1.0 / 20  # position standard deviation per pixel of box height
VELOCITY_NOISE = 1.0 / 160  # velocity standard deviation per pixel of box height
_ASPECT_STD, _ASPECT_VELOCITY_STD, _ASPECT_MEASUREMENT_STD = 1e-2, 1e-5, 1e-1

# x' = x + v per frame; the measurement is the first four state entries.
_MOTION = np.eye(8) + np.eye(8, k=4)


def xyxy_to_xyah(boxes: np.ndarray) -> np.ndarray:
    """Boxes float [N, 4] "xyxy" -> measurements [N, 4] (centre x, centre y, width / height, height)."""
    width = boxes[:, 2] - boxes[:, 0]
    height = boxes[:, 3] - boxes[:, 1]
    return np.stack([boxes[:, 0] + width / 2, boxes[:, 1] + height / 2, width / height, height], axis=1)


def xyah_to_xyxy(xyah: np.ndarray) -> np.ndarray:
    """Measurements or state means float [N, >=4] (cx, cy, a, h, ...) -> boxes [N, 4] "xyxy"."""
    half_w = xyah[:, 2] * xyah[:, 3] / 2
    half_h = xyah[:, 3] / 2
    return np.stack([xyah[:, 0] - half_w, xyah[:, 1] - half_h, xyah[:, 0] + half_w, xyah[:, 1] + half_h], axis=1)


def _diagonal(stds: np.ndarray) -> np.ndarray:
    """Rows of standard deviations float [T, K] -> diagonal covariances [T, K, K]."""
    out = np.zeros(stds.shape + (stds.shape[1],))
    idx = np.arange(stds.shape[1])
    out[:, idx, idx] = stds**2
    return out


def _stds(height: np.ndarray, position: float, aspect: float, velocity: float, aspect_velocity: float) -> np.ndarray:
    """Per-track standard deviations [T, 8] of (cx, cy, a, h, vcx, vcy, va, vh) scaled by the box height."""
    h = height[:, None]
    return np.concatenate([h * [position, position, 0.0, position] + [0.0, 0.0, aspect, 0.0],
                           h * [velocity, velocity, 0.0, velocity] + [0.0, 0.0, aspect_velocity, 0.0]], axis=1)


def initiate(measurements: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """New tracks from measurements [T, 4] (xyah): zero velocity, wide uncertainty -> (means, covariances)."""
    means = np.concatenate([measurements, np.zeros_like(measurements)], axis=1)
    stds = _stds(measurements[:, 3], 2 * POSITION_NOISE, _ASPECT_STD, 10 * VELOCITY_NOISE, _ASPECT_VELOCITY_STD)
    return means, _diagonal(stds)


def predict(means: np.ndarray, covariances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One frame ahead: x' = F x, P' = F P F^T + Q, with Q scaled by each track's height."""
    noise = _diagonal(_stds(means[:, 3], POSITION_NOISE, _ASPECT_STD, VELOCITY_NOISE, _ASPECT_VELOCITY_STD))
    return means @ _MOTION.T, _MOTION @ covariances @ _MOTION.T + noise


def update(means: np.ndarray, covariances: np.ndarray, measurements: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Correct predicted tracks [T] with their measurements [T, 4] (xyah) -> (means, covariances)."""
    h = means[:, 3:4]
    aspect = np.full_like(h, _ASPECT_MEASUREMENT_STD)
    measurement_noise = _diagonal(np.concatenate([h * POSITION_NOISE, h * POSITION_NOISE, aspect, h * POSITION_NOISE],
                                                 axis=1))
    innovation_cov = covariances[:, :4, :4] + measurement_noise  # S = H P H^T + R
    # K = P H^T S^-1; S is symmetric, so K^T = S^-1 (H P) is one batched solve.
    gain = np.linalg.solve(innovation_cov, covariances[:, :4, :]).transpose(0, 2, 1)
    innovation = measurements - means[:, :4]
    new_means = means + (gain @ innovation[:, :, None])[:, :, 0]
    new_covariances = covariances - gain @ innovation_cov @ gain.transpose(0, 2, 1)
    return new_means, new_covariances
