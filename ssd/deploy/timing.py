"""Images per second of several detectors, timed round-robin so that each sees the same machine load."""

from __future__ import annotations

import statistics
import time

import numpy as np

from ssd.detections import DetectFn


def interleaved_rates(detectors: dict[str, DetectFn], images: np.ndarray, batch: int,
                      repeats: int) -> dict[str, float]:
    """Median images/s of each detector over `repeats` rounds, one pass of `images` per detector per round.

    Round-robin, so that every detector is timed under the same drift of a shared machine's load.
    """
    for detect in detectors.values():
        detect(images[:batch])  # warm-up: kernels, allocations
    rates: dict[str, list[float]] = {label: [] for label in detectors}
    for _ in range(repeats):
        for label, detect in detectors.items():
            tic = time.perf_counter()
            for start in range(0, len(images), batch):
                detect(images[start : start + batch])
            rates[label].append(len(images) / (time.perf_counter() - tic))
    return {label: statistics.median(values) for label, values in rates.items()}
