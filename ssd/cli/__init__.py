"""Small pieces the command-line scripts share.

A quiet start (`configure_logging`): TensorFlow's C++ logging below errors is off unless the user
set TF_CPP_MIN_LOG_LEVEL (then that level holds). TensorFlow 2.21 writes some lines before it
reads that variable (absl's "All log messages before absl::InitializeLog()", INFO lines about
oneDNN and CUDA drivers, both at import) and, on a machine without a GPU, an ERROR "failed call to
cuInit" when it first lists its devices; no environment variable stops those. So when TensorFlow
is first imported, the import and the device listing run with the process's C-level stderr (file
descriptor 2) going to a temporary file, and the captured text is then written back to stderr
without the lines below the level (and without the cuInit line when no GPU was found). Nothing
else is held back: Python's own output in that window is written back too, in order.
"""

from __future__ import annotations

import argparse
import importlib.abc
import importlib.machinery
import logging
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

TF_LEVEL_VARIABLE = "TF_CPP_MIN_LOG_LEVEL"
# absl's C++ log line: severity letter, month and day, time, thread, file:line]; matched on its
# first fields only, so that a line cut short (a capture file that could not grow) is still known
_ABSL_LINE = re.compile(r"^([IWEF])\d{4} \d\d:\d\d:[\d.]+ ")
_ABSL_PRE_INIT = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
_CPU_NOTICE_TAIL = "To enable the following instructions:"  # second line of an INFO notice
_NO_GPU = "failed call to cuInit"
# TensorFlow's notice when a dependency (tf2onnx) calls one of its deprecated functions: nothing a
# user of ours can act on.
_TF_DEPRECATION = re.compile(r"\(from [\w.]+\) is deprecated and will be removed")


# The project's own loggers; every other (third-party) logger stays at WARNING, --verbose or not.
OWN_LOGGERS = ("ssd", "ssd_datasets")


def configure_logging(verbose: bool = False) -> None:
    """The project's messages at INFO to stderr (DEBUG with verbose), third-party ones from WARNING
    (TensorFlow's notices about deprecated calls our dependencies make, never); a quiet TensorFlow
    start (see the module docstring)."""
    os.environ.setdefault(TF_LEVEL_VARIABLE, "2")
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger().setLevel(logging.WARNING)  # the level every logger not set below inherits
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.INFO)
    tf_logger = logging.getLogger("tensorflow")
    if _not_deprecation not in tf_logger.filters:
        tf_logger.addFilter(_not_deprecation)
    if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietTensorFlow) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlow())


def _not_deprecation(record: logging.LogRecord) -> bool:
    return not _TF_DEPRECATION.search(record.getMessage())


def dropped_start_up_lines(text: str, level: int, gpus_found: bool) -> tuple[str, list[str]]:
    """`text` written to stderr while TensorFlow started, without the lines below `level` (0 INFO,
    1 WARNING, 2 ERROR, 3 FATAL) and the cuInit failure of a machine without GPU; (kept text, dropped lines)."""
    kept, dropped = [], []
    for line in text.splitlines(keepends=True):
        absl = _ABSL_LINE.match(line)
        below = (absl is not None and "IWEF".index(absl.group(1)) < level) or \
            (line.startswith(_ABSL_PRE_INIT) and level > 1) or (line.startswith(_CPU_NOTICE_TAIL) and level > 0) or \
            (absl is not None and _NO_GPU in line and not gpus_found and level > 1)
        (dropped if below else kept).append(line)
    return "".join(kept), dropped


class _QuietTensorFlow(importlib.abc.MetaPathFinder):
    """On the first `import tensorflow`: import it and list its devices with fd 2 captured, then
    write the captured text back without TensorFlow's start-up lines (`dropped_start_up_lines`)."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)  # once; the real finders do the finding
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _CapturingLoader(spec.loader)
        return spec


def _tf_level() -> int:
    """TF_CPP_MIN_LOG_LEVEL as TensorFlow reads it (a value that is not a number: 0)."""
    try:
        return int(os.environ.get(TF_LEVEL_VARIABLE, "0"))
    except ValueError:
        return 0


class _CapturingLoader(importlib.abc.Loader):
    def __init__(self, loader: importlib.abc.Loader):
        self.loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> Any:
        return self.loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        gpus_found = True  # unless the listing says otherwise, keep the cuInit line
        sys.stdout.flush()
        sys.stderr.flush()
        saved = os.dup(2)
        with tempfile.TemporaryFile() as capture:
            os.dup2(capture.fileno(), 2)
            try:
                self.loader.exec_module(module)
                gpus_found = bool(module.config.list_physical_devices("GPU"))
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
                os.close(saved)
                capture.seek(0)
                text = capture.read().decode("utf-8", "replace")
                text += "" if not text or text.endswith("\n") else "\n"  # cut short: what follows starts a line
                level = _tf_level()
                sys.stderr.write(dropped_start_up_lines(text, level, gpus_found)[0])
                sys.stderr.flush()


def add_model_arguments(parser: argparse.ArgumentParser, required: bool = True, group=None) -> None:
    """--model PATH (any exported format; --graph is its old name), in `group` if given, and --precision."""
    (group or parser).add_argument(
        "--model", "--graph", dest="model", type=Path, required=required,
        help="an exported model: export directory (its frozen graph), .pb, SavedModel directory, .onnx "
             "(ONNX Runtime), .xml (OpenVINO IR) or .tflite; --graph is the old name of this option")
    parser.add_argument("--precision", choices=("auto", "f32", "bf16"), default="auto",
                        help="auto (default): the fastest precision the export's accuracy checks allow on this "
                             "CPU (INT8, else OpenVINO bf16, else fp32), printed at start; f32 or bf16: "
                             "OpenVINO inference precision of the model given")


def writable_dir_problem(path: Path) -> str | None:
    """Why `path` cannot be an output directory, or None: a file, or a directory (or, when it does not
    exist yet, the nearest existing folder it would be made in) that cannot be written (read-only file
    system, permissions). Nothing is created: a command refused later leaves no empty folder behind."""
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        return "is a file, not a directory" if existing == path else "cannot create or write there (Not a directory)"
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        return f"cannot create or write there ({err.strerror or err})"
    return None
