"""Small pieces the command-line scripts share."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path


def configure_logging(verbose: bool = False) -> None:
    """INFO to stderr (DEBUG with verbose); TensorFlow's C++ start-up chatter silenced."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("absl").setLevel(logging.WARNING)


def add_model_arguments(parser: argparse.ArgumentParser, required: bool = True, group=None) -> None:
    """--model PATH (any exported format; --graph is its old name), in `group` if given, and --precision."""
    (group or parser).add_argument(
        "--model", "--graph", dest="model", type=Path, required=required,
        help="an exported model: export directory (its frozen graph), .pb, SavedModel directory, .onnx "
             "(ONNX Runtime), .xml (OpenVINO IR) or .tflite; --graph is the old name of this option")
    parser.add_argument("--precision", choices=("f32", "bf16"), default="f32",
                        help="OpenVINO inference precision (default: f32; bf16 where the CPU has it)")
