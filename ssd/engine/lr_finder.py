"""Learning-rate range test: raise the rate exponentially over a few hundred steps, watch the loss."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ssd.engine.trainer import Trainer
from ssd.modeling.run_dir import write_atomic


def suggest_learning_rate(rates: np.ndarray, losses: np.ndarray) -> float:
    """The rate where the smoothed loss falls fastest (steepest negative slope in log-rate)."""
    if len(rates) < 3:
        return float(rates[0])
    slopes = np.gradient(losses, np.log(rates))
    return float(rates[int(np.argmin(slopes))])


def lr_range_test(trainer: Trainer, out_dir: str | Path, min_rate: float = 1e-6, max_rate: float = 1.0,
                  steps: int = 200, smoothing: float = 0.9, progress: bool = True) -> float:
    """Train `steps` steps with the rate going from min_rate to max_rate; stop when the loss explodes.

    `trainer` is built with range_test=True: its model starts fresh, its rate is settable, and
    its run directory is not restored from or saved to; it reads its own training pipeline.
    Writes lr_finder.csv (step, learning_rate, loss, smoothed_loss) and lr_finder.png to
    out_dir. Returns the suggested rate.
    """
    if not 0 < min_rate < max_rate:
        raise ValueError(f"lr range test needs 0 < min_rate < max_rate, got {min_rate}, {max_rate}")
    if steps < 3:
        raise ValueError(f"lr range test needs at least 3 steps, got {steps}")
    if not trainer.range_test:
        raise ValueError("lr range test needs a Trainer built with range_test=True (a settable constant rate)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = _sweep(trainer, min_rate, max_rate, steps, smoothing, progress)
    table = io.StringIO(newline="")
    writer = csv.writer(table)
    writer.writerow(["step", "learning_rate", "loss", "smoothed_loss"])
    writer.writerows(rows)
    write_atomic(out_dir / "lr_finder.csv", table.getvalue())
    finite = [r for r in rows if math.isfinite(r[3])]
    if not finite:
        raise RuntimeError(f"lr range test: the loss was not finite from the first step at rate {min_rate}")
    rates, smoothed = np.array([r[1] for r in finite]), np.array([r[3] for r in finite])
    suggestion = suggest_learning_rate(rates, smoothed)
    _plot(rates, smoothed, suggestion, out_dir / "lr_finder.png")
    return suggestion


def _sweep(trainer: Trainer, min_rate: float, max_rate: float, steps: int, smoothing: float,
           progress: bool) -> list[tuple[int, float, float, float]]:
    """(step, rate, loss, bias-corrected smoothed loss) rows until `steps` or divergence."""
    rows: list[tuple[int, float, float, float]] = []
    best, avg, epoch = math.inf, 0.0, 0
    bar = tqdm(total=steps, unit="step", desc="lr range test", disable=not progress)
    with trainer.train_pipeline() as pipeline, bar:
        while True:
            for batch in pipeline.epoch(epoch):
                i = len(rows)
                rate = min_rate * (max_rate / min_rate) ** (i / (steps - 1))
                trainer.set_learning_rate(rate)
                loss = trainer.train_step(batch)["total_loss"]
                avg = smoothing * avg + (1 - smoothing) * loss
                smoothed = avg / (1 - smoothing ** (i + 1))
                rows.append((i, rate, loss, smoothed))
                bar.update(1)
                if len(rows) >= steps or not math.isfinite(smoothed) or smoothed > 4 * best:
                    return rows
                best = min(best, smoothed)
            epoch += 1


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
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100)
    plt.close(fig)
    write_atomic(path, png.getvalue())
