"""The model the commands open: `--model` and `--precision` resolved by `choose_precision`, the choice printed."""

from __future__ import annotations

from pathlib import Path

from ssd.deploy.runtimes import choose_precision, load_model


def load_chosen_model(model: Path, precision: str, labels: Path | None = None):
    """`load_model` of what `choose_precision` picks for --model and --precision, the choice printed."""
    choice = choose_precision(model, precision)
    print(f"precision {choice.label} ({choice.path}): {choice.reason}", flush=True)
    return load_model(choice.path, choice.precision, labels)
