"""Small pieces the command-line scripts share."""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
from pathlib import Path


# The project's own loggers; every other (third-party) logger stays at WARNING, --verbose or not.
OWN_LOGGERS = ("ssd", "ssd_datasets")


def configure_logging(verbose: bool = False) -> None:
    """The project's messages at INFO to stderr (DEBUG with verbose), third-party ones from WARNING;
    TensorFlow's C++ start-up chatter silenced."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger().setLevel(logging.WARNING)  # the level every logger not set below inherits
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.INFO)


def add_model_arguments(parser: argparse.ArgumentParser, required: bool = True, group=None) -> None:
    """--model PATH (any exported format; --graph is its old name), in `group` if given, and --precision."""
    (group or parser).add_argument(
        "--model", "--graph", dest="model", type=Path, required=required,
        help="an exported model: export directory (its frozen graph), .pb, SavedModel directory, .onnx "
             "(ONNX Runtime), .xml (OpenVINO IR) or .tflite; --graph is the old name of this option")
    parser.add_argument("--precision", choices=("f32", "bf16"), default="f32",
                        help="OpenVINO inference precision (default: f32; bf16 where the CPU has it)")


def writable_dir_problem(path: Path) -> str | None:
    """Why `path` cannot be an output directory (created here if missing), or None: a file, or a
    directory that cannot be created or written (read-only file system, permissions)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except FileExistsError:
        return "is a file, not a directory"
    except OSError as err:
        return f"cannot create or write there ({err.strerror or err})"
    return None
