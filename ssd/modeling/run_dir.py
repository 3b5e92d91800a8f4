"""The training run directory: its config JSON and checkpoints, and rebuilding a model from them.

    run_dir/config.json        {"model": ModelConfig, "train": TrainConfig (ssd.engine.recipe)}
    run_dir/checkpoints/       tf.train.CheckpointManager: model, optimizer, epoch, batch_in_epoch
    run_dir/best/              the checkpoint with the best validation mAP, and best.json
    run_dir/logs/              TensorBoard summaries
    run_dir/train.log          one line per epoch

Every file here is written whole or not at all (`write_atomic`: a temporary file beside it,
fsync'd, then renamed over it), so a run killed or out of disk space mid-write never leaves half
a config.json or best.json; a JSON file damaged some other way is refused naming it
(`read_json`). A checkpoint save that fails leaves TensorFlow's `ckpt-N_temp/` directory
behind: `remove_unfinished_writes` deletes those (and our own temporaries) when the next run
starts. A write that fails for want of space becomes `StorageFullError` (`storage_full`),
which names the path, the space needed and the space free.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from ssd.config import ModelConfig

from ssd.modeling.model import build_model_from_config

RUN_CONFIG, CHECKPOINTS, BEST = "config.json", "checkpoints", "best"
_TEMP_MARK = ".tmp-"  # write_atomic's temporaries: "<name>.tmp-<pid>"
_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_FULL_WORDS = ("No space left on device", "Disk quota exceeded", "File too large")  # TensorFlow's messages


class StorageFullError(OSError):
    """A run-directory write failed for want of space; the message names the path and the space."""


def write_atomic(path: str | Path, content: str | bytes) -> None:
    """Write `content` (text as UTF-8) to `path` whole or not at all: a temporary beside it, fsync'd,
    renamed over it."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}{_TEMP_MARK}{os.getpid()}")
    data = content.encode("utf-8") if isinstance(content, str) else content
    try:
        with storage_full(path, len(data)), open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def read_json(path: str | Path, what: str) -> Any:
    """The JSON in `path`; ValueError naming the file (and `what` it is) if it is truncated or not JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{what} {path} is damaged (truncated or not JSON: {err}); restore it or "
                         "start a new run directory") from None


@contextlib.contextmanager
def storage_full(path: str | Path, needed_bytes: int) -> Iterator[None]:
    """Turn a write error for want of space (OSError or TensorFlow's) inside into `StorageFullError`."""
    try:
        yield
    except StorageFullError:
        raise
    except Exception as err:
        full = (isinstance(err, OSError) and err.errno in _FULL_ERRNOS) or \
            (isinstance(err, tf.errors.OpError) and any(w in str(err) for w in _FULL_WORDS))
        if not full:
            raise
        raise StorageFullError(errno.ENOSPC, _full_message(Path(path), needed_bytes, err)) from None


def _full_message(path: Path, needed_bytes: int, err: Exception) -> str:
    existing = next((p for p in (path, *path.parents) if p.exists()), Path("."))
    free = shutil.disk_usage(existing).free
    reason = next((w for w in _FULL_WORDS if w in str(err)), os.strerror(getattr(err, "errno", 0) or errno.ENOSPC))
    return (f"cannot write {path}: {reason.lower()} (it needs about {needed_bytes / 2**20:.1f} MB; "
            f"{free / 2**20:.1f} MB free on that disk)")


def remove_unfinished_writes(run_dir: str | Path) -> list[Path]:
    """Delete the leftovers of writes a previous run did not finish (ckpt-N_temp/, our temporaries)."""
    run_dir = Path(run_dir)
    removed = [p for sub in (CHECKPOINTS, BEST) for p in (run_dir / sub).glob("*_temp") if p.is_dir()]
    removed += [p for p in (*run_dir.glob(f"*{_TEMP_MARK}*"), *(run_dir / BEST).glob(f"*{_TEMP_MARK}*"))]
    for path in removed:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return removed


def save_run_config(run_dir: str | Path, model_config: ModelConfig, train_options: Mapping[str, Any]) -> None:
    """Write config.json atomically (a killed run never leaves half a file); `train_options` is the
    trainer's `TrainConfig.to_dict()` (modeling does not know the recipe; {} for a converted model)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"model": model_config.to_dict(), "train": dict(train_options)}, indent=2)
    write_atomic(run_dir / RUN_CONFIG, text + "\n")


def read_run_json(path: str | Path) -> dict[str, Any]:
    """The parsed config.json of a run directory (or the file itself), refused naming it if unusable."""
    path = Path(path)
    path = path / RUN_CONFIG if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"no run config at {path}: expected a run directory with {RUN_CONFIG}")
    data = read_json(path, "run config")
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise ValueError(f"{path}: not a run config (expected {{\"model\": {{...}}, \"train\": {{...}}}})")
    return data


def load_model_config(path: str | Path) -> ModelConfig:
    """The model config of a run directory (or of a config.json file itself)."""
    return ModelConfig.from_dict(read_run_json(path)["model"])


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
    model_config = load_model_config(run_dir)
    model = build_model_from_config(model_config)
    tf.train.Checkpoint(model=model).restore(checkpoint_path(run_dir, which)).expect_partial()
    return model, model_config
