"""The train and evaluate commands on each tool's export as written: one argument names the data.

`--data-root <export>` with no split or class flag (`--val-fraction 0.25` for the one-split
exports) trains two steps, config.json holds the tool's class names in the tool's order, and
evaluating the run on the export counts exactly the images and objects the fixture wrote.
"""

from __future__ import annotations

import json

import pytest

from ssd.cli import evaluate as evaluate_cli
from ssd.cli import train as train_cli
from tests.export_fixtures import (CVAT_CLASSES, IMAGES, LABEL_STUDIO_CLASSES, ULTRALYTICS_CLASSES, write_cvat_coco,
                                   write_label_studio, write_labelimg, write_roboflow, write_ultralytics)

SORTED = ("circle", "square", "triangle")
# name: (writer(tmp_path) -> the path a user passes, the tool's classes, extra flags, images evaluated)
LAYOUTS = {
    "ultralytics": (write_ultralytics, ULTRALYTICS_CLASSES, [], IMAGES[3:]),  # evaluates val
    "roboflow": (write_roboflow, SORTED, [], IMAGES[2:3]),  # evaluates valid
    "cvat-coco": (lambda p: write_cvat_coco(p / "cvat"), CVAT_CLASSES, ["--val-fraction", "0.25"], IMAGES),
    "label-studio": (lambda p: write_label_studio(p / "ls") / "result.json", LABEL_STUDIO_CLASSES,
                     ["--val-fraction", "0.25"], IMAGES),
    "labelimg": (lambda p: write_labelimg(p / "labelimg"), SORTED, ["--val-fraction", "0.25"], IMAGES),
}


@pytest.mark.slow
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_train_and_evaluate_an_export_as_written(tmp_path, capsys, layout):
    write, classes, flags, evaluated = LAYOUTS[layout]
    data = str(write(tmp_path))
    run = tmp_path / "run"
    assert train_cli.main(["--data-root", data, "--run-dir", str(run), "--width", "0.125", "--from-scratch",
                           "--iterations", "2", "--batch-size", "2", "--workers", "1", *flags]) == 0
    config = json.loads((run / "config.json").read_text())
    assert tuple(config["model"]["class_names"]) == classes
    if flags:
        assert config["train"]["val_fraction"] == 0.25
    metrics = tmp_path / "metrics.json"
    assert evaluate_cli.main(["--run-dir", str(run), "--data", data, "--no-progress", "--json", str(metrics)]) == 0
    result = json.loads(metrics.read_text())
    assert result["num_images"] == len(evaluated)
    wrote = {name: sum(o[0] == name for _, _, objects in evaluated for o in objects) for name in classes}
    assert {name: c["num_ground_truth"] for name, c in result["classes"].items()} == wrote


def test_misconfiguration_is_one_line_naming_the_file_and_the_fix(tmp_path, capsys):
    yaml = write_ultralytics(tmp_path)
    yaml.write_text(yaml.read_text().replace("names:", "nc: 2\nnames:"))
    args = ["--run-dir", str(tmp_path / "run"), "--from-scratch", "--data", str(yaml)]
    assert train_cli.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert err.endswith(f"{yaml}: nc is 2 but names lists 3 classes: set nc: 3 or remove the nc line")
    root = write_roboflow(tmp_path)
    assert train_cli.main(["--run-dir", str(tmp_path / "run"), "--from-scratch", "--data", str(root),
                           "--classes", "circle,hexagon"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--classes: hexagon not among the dataset's classes circle, square, triangle" in err
