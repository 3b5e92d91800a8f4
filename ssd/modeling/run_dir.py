"""The training run directory: its config JSON and checkpoints, and rebuilding a model from them.

    run_dir/config.json        {"model": ModelConfig, "train": TrainConfig}
    run_dir/checkpoints/       tf.train.CheckpointManager: model, optimizer, epoch, batch_in_epoch
    run_dir/best/              the checkpoint with the best validation mAP, and best.json
    run_dir/logs/              TensorBoard summaries
    run_dir/train.log          one line per epoch
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import keras
import tensorflow as tf

from ssd.config import ModelConfig, TrainConfig
from ssd.modeling.model import build_model_from_config

CHECKPOINTS, BEST = "checkpoints", "best"


def save_run_config(run_dir: str | Path, model_config: ModelConfig, train_config: TrainConfig) -> None:
    """Write config.json atomically (a killed run never leaves half a file)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"model": model_config.to_dict(), "train": train_config.to_dict()}, indent=2)
    tmp = run_dir / "config.json.tmp"
    tmp.write_text(text + "\n")
    os.replace(tmp, run_dir / "config.json")


def load_run_config(path: str | Path) -> tuple[ModelConfig, TrainConfig]:
    """Configs of a run directory (or of a config.json file itself)."""
    path = Path(path)
    path = path / "config.json" if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"no run config at {path}: expected a run directory with config.json")
    data = json.loads(path.read_text())
    return ModelConfig.from_dict(data["model"]), TrainConfig.from_dict(data["train"])


def checkpoint_path(run_dir: str | Path, which: str = "best") -> str:
    """Path of the 'best' checkpoint (falling back to the latest when there is none) or the 'latest'."""
    if which not in ("best", "latest"):
        raise ValueError(f"checkpoint must be 'best' or 'latest', got {which!r}")
    run_dir = Path(run_dir)
    candidates = [BEST, CHECKPOINTS] if which == "best" else [CHECKPOINTS]
    for sub in candidates:
        path = tf.train.latest_checkpoint(str(run_dir / sub))
        if path:
            return path
    raise FileNotFoundError(f"no checkpoint in {run_dir}/{CHECKPOINTS} or {run_dir}/{BEST}: has the run saved one?")


def load_trained_model(run_dir: str | Path, which: str = "best") -> tuple[keras.Model, ModelConfig]:
    """Rebuild the run's model (float32) and restore its weights from a checkpoint."""
    model_config, _ = load_run_config(run_dir)
    model = build_model_from_config(model_config)
    tf.train.Checkpoint(model=model).restore(checkpoint_path(run_dir, which)).expect_partial()
    return model, model_config
