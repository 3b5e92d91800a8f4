"""Learning-rate range test: raise the rate exponentially over a few hundred steps, watch the loss."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ssd.augment import TrainAugmentation
from ssd.pipeline import BatchPipeline
from ssd.records import DetectionDataset


def suggest_learning_rate(rates: np.ndarray, losses: np.ndarray) -> float:
    """The rate where the smoothed loss falls fastest (steepest negative slope in log-rate)."""
    if len(rates) < 3:
        return float(rates[0])
    slopes = np.gradient(losses, np.log(rates))
    return float(rates[int(np.argmin(slopes))])


def lr_range_test(trainer, dataset: DetectionDataset, out_dir: str | Path, min_rate: float = 1e-6,
                  max_rate: float = 1.0, steps: int = 200, smoothing: float = 0.9) -> float:
    """Train `steps` steps with the rate going from min_rate to max_rate; stop when the loss explodes.

    Writes lr_finder.csv (step, rate, loss, smoothed) and lr_finder.png to out_dir; the weights
    are not saved. Returns the suggested rate.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = trainer.config
    batch = config.batch_size // trainer.num_workers
    trainer.build(max(len(dataset.samples) // batch, 1), constant_rate=True)
    rate_of = lambda i: min_rate * (max_rate / min_rate) ** (i / max(steps - 1, 1))
    rows, best, avg = [], math.inf, 0.0
    pipeline = BatchPipeline(dataset.samples, TrainAugmentation(trainer.model_config.image_size), batch,
                             trainer.model_config.image_size, max_boxes=config.max_boxes,
                             num_workers=config.workers, seed=config.seed, drop_remainder=True)
    with pipeline, tqdm(total=steps, unit="step", desc="lr range test") as bar:
        epoch = 0
        while len(rows) < steps:
            for batch_data in pipeline.epoch(epoch):
                i = len(rows)
                if i >= steps:
                    break
                trainer.set_learning_rate(rate_of(i))
                loss = float(trainer.train_step(batch_data)["total_loss"])
                avg = smoothing * avg + (1 - smoothing) * loss
                smoothed = avg / (1 - smoothing ** (i + 1))
                rows.append((i, rate_of(i), loss, smoothed))
                bar.update(1)
                if not math.isfinite(loss) or smoothed > 4 * best:
                    break
                best = min(best, smoothed)
            else:
                epoch += 1
                continue
            break
    with open(out_dir / "lr_finder.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "learning_rate", "loss", "smoothed_loss"])
        writer.writerows(rows)
    finite = [r for r in rows if math.isfinite(r[3])]
    rates, smoothed = np.array([r[1] for r in finite]), np.array([r[3] for r in finite])
    suggestion = suggest_learning_rate(rates, smoothed)
    _plot(rates, smoothed, suggestion, out_dir / "lr_finder.png")
    return suggestion


def _plot(rates: np.ndarray, losses: np.ndarray, suggestion: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(rates, losses)
    ax.axvline(suggestion, color="tab:red", linestyle="--", label=f"suggested {suggestion:.1e}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("smoothed loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
