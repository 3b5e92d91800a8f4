"""ssd/cli/__init__.py: a quiet start. TensorFlow's C++ start-up lines below the level are kept off
stderr (checked in fresh processes, where TensorFlow really prints them), everything else is kept,
and TensorFlow's notices about deprecated calls made by our dependencies are not shown."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys

import pytest

from ssd.cli import configure_logging, dropped_start_up_lines

TRANSCRIPT = """\
python says hello
WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
I0000 00:00:1796552936.493014    8082 port.cc:153] oneDNN custom operations are on.
I0000 00:00:1796552936.498233    8082 cudart_stub.cc:31] Could not find cuda drivers on your machine.
I0000 00:00:1796552760.424098    6628 cpu_feature_guard.cc:227] This TensorFlow binary is optimized.
To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild TensorFlow.
W0000 00:00:1796552936.5    8082 some.cc:1] a warning
E0000 00:00:1796552945.994391    8082 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error (303)
E0000 00:00:1796552945.994391    8082 other.cc:9] a real error
F0000 00:00:1796552945.994391    8082 other.cc:9] a fatal one
python says goodbye
"""


def test_lines_below_the_level_are_dropped_and_everything_else_kept_in_order():
    kept, dropped = dropped_start_up_lines(TRANSCRIPT, level=2, gpus_found=False)
    assert kept.splitlines() == ["python says hello", TRANSCRIPT.splitlines()[8], TRANSCRIPT.splitlines()[9],
                                 "python says goodbye"]
    assert len(dropped) == 7
    # the cuInit line is only the "no GPU" notice when no GPU was found
    assert "failed call to cuInit" in dropped_start_up_lines(TRANSCRIPT, 2, gpus_found=True)[0]
    assert dropped_start_up_lines(TRANSCRIPT, 0, gpus_found=False) == (TRANSCRIPT, [])  # the user asked for all
    level3 = dropped_start_up_lines(TRANSCRIPT, 3, gpus_found=True)[0].splitlines()
    assert level3 == ["python says hello", TRANSCRIPT.splitlines()[9], "python says goodbye"]


def test_tensorflow_deprecation_notices_about_dependencies_are_not_shown(caplog):
    configure_logging()
    with caplog.at_level(logging.WARNING):
        logging.getLogger("tensorflow").warning(
            "From tf2onnx/tf_loader.py:164: convert_variables_to_constants (from "
            "tensorflow.python.framework.convert_to_constants) is deprecated and will be removed in a future version.")
        logging.getLogger("tensorflow").warning("a warning of its own")
    assert "deprecated" not in caplog.text and "a warning of its own" in caplog.text


SCRIPT = """
import sys
from ssd.cli import configure_logging
configure_logging()
print("before", file=sys.stderr, flush=True)
import tensorflow as tf
print("devices", *[d.device_type for d in tf.config.list_physical_devices()], file=sys.stderr, flush=True)
"""
ABSL = re.compile(r"^[IWEF]\d{4} [\d:.]+ +\d+ \S+:\d+\] ", re.M)


def start(level: str | None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    if level is not None:
        env["TF_CPP_MIN_LOG_LEVEL"] = level
    return subprocess.Popen([sys.executable, "-c", SCRIPT], env=env, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_a_cli_process_starts_tensorflow_quietly_unless_the_user_set_the_level():
    quiet, chatty = start(None), start("0")  # side by side: each import takes a while
    quiet_err, chatty_err = quiet.communicate(timeout=300)[1], chatty.communicate(timeout=300)[1]
    assert quiet.returncode == 0 and chatty.returncode == 0, quiet_err + chatty_err
    assert ABSL.search(chatty_err), "TensorFlow printed no C++ log line at level 0: nothing to test here"
    assert not ABSL.search(quiet_err) and "absl::InitializeLog" not in quiet_err, quiet_err
    lines = quiet_err.splitlines()
    assert lines[0] == "before" and lines[-1].startswith("devices CPU")
    if "GPU" not in lines[-1]:
        assert "cuInit" not in quiet_err
