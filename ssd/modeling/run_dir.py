"""The training run directory: its config JSON and checkpoints, and rebuilding a model from them.

    run_dir/config.json        {"model": ModelConfig, "train": TrainConfig (ssd.engine.recipe)}
    run_dir/checkpoints/       tf.train.CheckpointManager: model, optimizer, epoch, batch_in_epoch
    run_dir/best/              the checkpoint with the best validation mAP, and best.json
    run_dir/logs/              TensorBoard summaries
    run_dir/train.log          one line per epoch
    run_dir/{checkpoints,best}/damaged/   damaged checkpoints a trainer set aside

Every file here is written whole or not at all (`write_atomic`: a temporary file beside it,
fsync'd, then renamed over it), so a run killed or out of disk space mid-write never leaves half
a config.json or best.json; a JSON file damaged some other way is refused naming it
(`read_json`). A checkpoint save that fails leaves TensorFlow's `ckpt-N_temp/` directory
behind: `remove_unfinished_writes` deletes those (and our own temporaries) when the next run
starts. A write that fails for want of space becomes `StorageFullError` (`storage_full`),
which names the path, the space needed and the space free.

A checkpoint can still be damaged from outside (an interrupted copy, a bad disk): a truncated
or unreadable .index or .data file, or a `checkpoint` file naming files that are gone.
`scan_checkpoints` reads a checkpoint directory newest first, every tensor with its checksum,
and returns the newest intact checkpoint and the damaged ones newer than it, each named with
the file at fault; `checkpoint_path` (export, evaluation) and the trainer's resume use it to fall
back, and `set_aside` moves damaged ones into damaged/ so the next save starts clean.

TensorFlow is imported only by the functions that use it, so the layout and JSON helpers load in
a fraction of a second (the training CLI checks its run directory before TensorFlow starts).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import shutil
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ssd.config import ModelConfig

if TYPE_CHECKING:
    import keras

log = logging.getLogger(__name__)

RUN_CONFIG, CHECKPOINTS, BEST, DAMAGED = "config.json", "checkpoints", "best", "damaged"
STATE_FILE = "checkpoint"  # TensorFlow's list of a directory's checkpoints
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
        tf = sys.modules.get("tensorflow")  # a TensorFlow error needs TensorFlow loaded
        full = (isinstance(err, OSError) and err.errno in _FULL_ERRNOS) or \
            (tf is not None and isinstance(err, tf.errors.OpError) and any(w in str(err) for w in _FULL_WORDS))
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


@dataclass(frozen=True)
class CheckpointScan:
    """A checkpoint directory read newest first.

    intact: the newest checkpoint whose files all read back (its prefix), or None.
    damaged: (path, why) of every checkpoint newer than it that does not, and of the directory's
    `checkpoint` file when it cannot be parsed; older checkpoints are not read.
    """

    directory: Path
    intact: str | None
    damaged: tuple[tuple[str, str], ...]

    def report(self) -> str:
        """The damaged checkpoints and why, on one line."""
        return "; ".join(f"{path}: {why}" for path, why in self.damaged)


def checkpoint_problem(prefix: str) -> str | None:
    """Why the TensorFlow checkpoint `prefix` cannot be read whole, naming the file at fault; None if intact.

    Reads every tensor (TensorFlow checks each one's CRC32C), so a truncated or altered .data file
    is found as surely as an unreadable .index.
    """
    import tensorflow as tf

    index = f"{prefix}.index"
    if not os.path.isfile(index):
        return f"{index} is missing"
    try:
        reader = tf.train.load_checkpoint(prefix)
    except (tf.errors.OpError, LookupError, ValueError) as error:
        return f"{index} is unreadable ({_first_line(error)})"
    data = sorted(tf.io.gfile.glob(f"{prefix}.data-*"))
    try:
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except (tf.errors.OpError, LookupError, ValueError) as error:
        files = ", ".join(data) or f"{prefix}.data-*"
        return f"{files} is missing, truncated or altered ({_first_line(error)})"
    return None


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def _candidates(directory: Path) -> tuple[list[str], list[tuple[str, str]]]:
    """Checkpoint prefixes of `directory`, newest first (those on disk and those its `checkpoint`
    file names), and the `checkpoint` file itself as damaged if it cannot be parsed."""
    import tensorflow as tf

    named: list[str] = []
    problems: list[tuple[str, str]] = []
    state_file = directory / STATE_FILE
    if state_file.is_file():
        state = tf.train.get_checkpoint_state(str(directory))
        if state is None:
            problems.append((str(state_file), "unreadable (not a checkpoint list); the checkpoints on disk are used"))
        else:
            named = [*state.all_model_checkpoint_paths, state.model_checkpoint_path]
    on_disk = [str(p)[: -len(".index")] for p in directory.glob("*.index")]
    prefixes = {str(Path(p) if Path(p).is_absolute() else directory / p) for p in [*named, *on_disk] if p}

    def newness(prefix: str) -> tuple[int, float]:
        number = re.search(r"-(\d+)$", prefix)
        index = Path(f"{prefix}.index")
        return int(number.group(1)) if number else -1, index.stat().st_mtime if index.exists() else 0.0

    return sorted(prefixes, key=newness, reverse=True), problems


def scan_checkpoints(directory: str | Path) -> CheckpointScan:
    """The newest intact checkpoint of `directory` and the damaged ones newer than it (see `CheckpointScan`)."""
    directory = Path(directory)
    if not directory.is_dir():
        return CheckpointScan(directory, None, ())
    prefixes, damaged = _candidates(directory)
    for prefix in prefixes:
        problem = checkpoint_problem(prefix)
        if problem is None:
            return CheckpointScan(directory, prefix, tuple(damaged))
        damaged.append((prefix, problem))
    return CheckpointScan(directory, None, tuple(damaged))


def set_aside(scan: CheckpointScan) -> Path:
    """Move the damaged files of `scan` into its directory's damaged/ and list only the rest in
    its `checkpoint` file (so TensorFlow's CheckpointManager starts clean); the damaged/ path."""
    target = scan.directory / DAMAGED
    target.mkdir(exist_ok=True)
    for path, _ in scan.damaged:
        for file in [Path(path)] if Path(path).is_file() else Path(path).parent.glob(f"{Path(path).name}.*"):
            os.replace(file, target / file.name)
    _list_only_present(scan.directory, scan.intact)
    return target


def _list_only_present(directory: Path, latest: str | None) -> None:
    """Rewrite `directory`'s `checkpoint` file to list only checkpoints whose files are there, `latest`
    as the newest; remove it when there is no `latest` or it cannot be parsed."""
    import tensorflow as tf
    from google.protobuf import text_format

    state_file = directory / STATE_FILE
    state = tf.train.get_checkpoint_state(str(directory)) if state_file.is_file() else None
    if state is None or latest is None:
        state_file.unlink(missing_ok=True)
        return
    paths, stamps = list(state.all_model_checkpoint_paths), list(state.all_model_checkpoint_timestamps)
    kept = [i for i, p in enumerate(paths) if Path(f"{p}.index").is_file()]
    kept_paths = [paths[i] for i in kept]
    # CheckpointManager pairs paths with timestamps; keep them only while they still pair up.
    kept_stamps = [stamps[i] for i in kept] if len(stamps) == len(paths) and latest in kept_paths else []
    if latest not in kept_paths:
        kept_paths.append(latest)
    del state.all_model_checkpoint_paths[:], state.all_model_checkpoint_timestamps[:]
    state.all_model_checkpoint_paths.extend(os.path.relpath(p, directory) for p in kept_paths)
    state.all_model_checkpoint_timestamps.extend(kept_stamps)
    state.model_checkpoint_path = os.path.relpath(latest, directory)
    write_atomic(state_file, text_format.MessageToString(state))


def checkpoint_path(run_dir: str | Path, which: str = "best") -> str:
    """Path of the newest intact 'best' checkpoint (else the latest) or the newest intact 'latest'.

    Damaged checkpoints on the way are named in a warning (see `scan_checkpoints`); nothing is
    moved, so a run that is training meanwhile is left alone.
    """
    if which not in ("best", "latest"):
        raise ValueError(f"checkpoint must be 'best' or 'latest', got {which!r}")
    run_dir = Path(run_dir)
    damaged = []
    for sub in [BEST, CHECKPOINTS] if which == "best" else [CHECKPOINTS]:
        scan = scan_checkpoints(run_dir / sub)
        for path, why in scan.damaged:
            log.warning("damaged checkpoint %s: %s", path, why)
        damaged += scan.damaged
        if scan.intact:
            if damaged:
                log.warning("using %s, the newest intact checkpoint", scan.intact)
            return scan.intact
    if damaged:
        raise FileNotFoundError(f"no intact checkpoint in {run_dir}/{CHECKPOINTS} or {run_dir}/{BEST}: every one "
                                "is damaged (named above)")
    raise FileNotFoundError(f"no checkpoint in {run_dir}/{CHECKPOINTS} or {run_dir}/{BEST}: has the run saved one?")


def load_trained_model(run_dir: str | Path, which: str = "best") -> tuple[keras.Model, ModelConfig]:
    """Rebuild the run's model (float32) and restore its weights from a checkpoint."""
    import tensorflow as tf

    from ssd.modeling.model import build_model_from_config

    model_config = load_model_config(run_dir)
    model = build_model_from_config(model_config)
    tf.train.Checkpoint(model=model).restore(checkpoint_path(run_dir, which)).expect_partial()
    return model, model_config
