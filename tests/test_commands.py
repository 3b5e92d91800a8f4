"""The front door: every user command is an installed console script, and the scripts in the tree
(train_detector.py, detect.py, export_graph.py, tools/*.py) are shims that run the same code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# console script -> the shim in the tree that the README's commands use
SHIMS = {
    "ssd-train": "train_detector.py",
    "ssd-detect": "detect.py",
    "ssd-export": "export_graph.py",
    "ssd-evaluate": "tools/evaluate.py",
    "ssd-evaluate-tracking": "tools/evaluate_tracking.py",
    "ssd-serve": "tools/serve.py",
    "ssd-convert": "tools/convert_weights.py",
    "ssd-make-dataset": "tools/make_synthetic_dataset.py",
    "ssd-make-video": "tools/make_synthetic_video.py",
    "ssd-demo": "tools/demo.py",
}


def installed_scripts() -> dict[str, str]:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def test_every_console_script_has_a_shim_in_the_tree():
    assert set(installed_scripts()) == set(SHIMS)


@pytest.mark.parametrize("script", sorted(SHIMS))
def test_console_script_and_shim_print_the_same_help_from_any_directory(script, tmp_path):
    if not (BIN / script).is_file():
        pytest.skip(f"{script} is not installed in this environment (run `make setup`)")
    command = subprocess.run([str(BIN / script), "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    shim = subprocess.run([sys.executable, str(ROOT / SHIMS[script]), "--help"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert command.returncode == 0, command.stderr
    assert shim.returncode == 0, shim.stderr
    assert command.stdout.startswith(f"usage: {script} ")
    assert shim.stdout.startswith(f"usage: {Path(SHIMS[script]).name} ")
    # the same parser: after the usage lines (which name the program) the texts are equal
    assert shim.stdout.split("\n\n", 1)[1] == command.stdout.split("\n\n", 1)[1]
