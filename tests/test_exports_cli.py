"""The train and evaluate commands on each tool's export as written: one argument names the data.

`--data-root <export>` with no split or class flag (`--val-fraction 0.25` for the one-split
exports) trains two steps, config.json holds the tool's class names in the tool's order, and
evaluating the run on the export counts exactly the images and objects the fixture wrote. A VOC
set and its COCO copy with other category ids in another order score alike, by name.
"""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest

from ssd_datasets import load_dataset, load_train_val
from ssd_datasets.synthetic import SYNTHETIC_CLASSES, generate_synthetic
from ssd.cli import evaluate as evaluate_cli
from ssd.cli import train as train_cli
from ssd.evaluation.coco import STAT_NAMES
from tests.export_fixtures import (CVAT_CLASSES, IMAGES, LABEL_STUDIO_CLASSES, ULTRALYTICS_CLASSES, write_cvat_coco,
                                   write_label_studio, write_labelimg, write_roboflow, write_ultralytics)
from tests.test_evaluation_coco import pycocotools_stats

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


def write_coco_copy(voc_root, root, category_ids: dict[str, int]) -> None:
    """The VOC set's test split as a COCO export: category ids sparse and listed in another order,
    image ids around 10^12, images copied to images/; difficult objects as iscrowd 1."""
    voc = load_dataset(voc_root, ["test"])
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    images, annotations = [], []
    for k, sample in enumerate(voc.samples):
        image_id = 10**12 + 7919 * k
        shutil.copy(sample.image_path, root / "images")
        images.append({"id": image_id, "file_name": sample.image_path.rsplit("/", 1)[1], "width": sample.width,
                       "height": sample.height})
        for (x0, y0, x1, y1), label, difficult in zip(sample.boxes.tolist(), sample.labels.tolist(),
                                                      sample.difficult.tolist()):
            annotations.append({"id": 500 + len(annotations), "image_id": image_id,
                                "category_id": category_ids[voc.class_names[label - 1]],
                                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0),
                                "iscrowd": int(difficult)})
    categories = [{"id": i, "name": n, "supercategory": "shape"} for n, i in category_ids.items()]
    (root / "annotations" / "instances_test.json").write_text(json.dumps(
        {"images": images, "annotations": annotations, "categories": categories}))


@pytest.mark.slow
def test_a_voc_run_evaluates_alike_on_a_coco_copy_with_other_category_ids_and_order(tmp_path):
    voc = tmp_path / "voc"
    generate_synthetic(voc, "voc", num_train=4, num_test=8, seed=5, image_size_range=(96, 160))
    run = tmp_path / "run"
    assert train_cli.main(["--data", str(voc), "--run-dir", str(run), "--width", "0.125", "--from-scratch",
                           "--iterations", "2", "--batch-size", "4", "--workers", "1", "--eval-every", "0"]) == 0
    sparse = dict(zip(reversed(SYNTHETIC_CLASSES), (90, 7, 41, 2, 66, 13)))  # reversed names, shuffled ids
    coco = tmp_path / "coco"
    write_coco_copy(voc, coco, sparse)
    common = ["--run-dir", str(run), "--no-progress", "--metric", "voc07", "voc10", "coco"]
    assert evaluate_cli.main([*common, "--data", str(voc), "--split", "test", "--json", str(tmp_path / "v.json")]) == 0
    assert evaluate_cli.main([*common, "--data", str(coco), "--json", str(tmp_path / "c.json"),
                              "--coco-results", str(tmp_path / "results.json")]) == 0
    on_voc, on_coco = (json.loads((tmp_path / f"{n}.json").read_text()) for n in "vc")
    assert on_coco["num_images"] == on_voc["num_images"] == 8
    assert on_coco["map_voc07"] == on_voc["map_voc07"] and on_coco["map_voc10"] == on_voc["map_voc10"]
    # pycocotools averages over categories in id order, and the two copies order them differently:
    # equal up to the last bit of a float sum
    for got, want in zip(on_coco["coco"]["stats"], on_voc["coco"]["stats"], strict=True):
        assert got.keys() == want.keys()
        for name in got:
            assert got[name] == (want[name] if want[name] is None else pytest.approx(want[name], rel=1e-12, abs=1e-15))
    results = json.loads((tmp_path / "results.json").read_text())
    assert {r["category_id"] for r in results} <= set(sparse.values())  # the dataset's own ids
    assert {r["image_id"] for r in results} <= {10**12 + 7919 * k for k in range(8)}
    direct = pycocotools_stats(coco / "annotations" / "instances_test.json", tmp_path / "results.json")
    assert [on_coco["coco"]["stats"][0][name] for name in STAT_NAMES] == direct


def _replaying_detector(samples, rng):
    """Detections for the images in `samples`' order: each true box jittered, some with another class,
    plus a random false positive, normalised (ymin, xmin, ymax, xmax) as a detector returns them."""
    per_image = []
    for s in samples:
        n = len(s.boxes)
        scale = np.array([s.width, s.height, s.width, s.height], np.float32)
        boxes = np.concatenate([s.boxes + rng.normal(0, 0.1, (n, 4)) * (s.boxes[:, 2:] - s.boxes[:, :2]).repeat(2, 1),
                                [[0.1, 0.1, 0.5, 0.6] * scale]]) / scale
        labels = np.append(np.where(rng.random(n) < 0.2, rng.integers(1, 7, n), s.labels), rng.integers(1, 7))
        per_image.append((np.clip(boxes, 0, 1)[:, [1, 0, 3, 2]], rng.random(n + 1), labels))
    queue = iter(per_image)

    def detect(images):
        out = {"detection_boxes": np.zeros((len(images), 20, 4), np.float32),
               "detection_scores": np.zeros((len(images), 20), np.float32),
               "detection_classes": np.zeros((len(images), 20), np.float32),
               "num_detections": np.zeros(len(images), np.float32)}
        for b in range(len(images)):
            boxes, scores, labels = next(queue)
            n = len(boxes)
            out["detection_boxes"][b, :n], out["detection_scores"][b, :n] = boxes, scores
            out["detection_classes"][b, :n], out["num_detections"][b] = labels, n
        return out

    return detect


def test_detections_score_alike_on_the_voc_set_and_its_coco_copy(tmp_path):
    """The same detections (labels in the VOC set's class order) against the VOC set and against a
    COCO copy whose categories have other ids in another order: the classes are matched by name, so
    VOC mAP and COCO AP agree, and pycocotools run on the results JSON gives the same COCO numbers."""
    from ssd.evaluation.loop import evaluate_detector
    from ssd.evaluation.metrics import make_evaluator

    voc = tmp_path / "voc"
    generate_synthetic(voc, "voc", num_train=1, num_test=10, seed=5, image_size_range=(64, 128))
    sparse = dict(zip(reversed(SYNTHETIC_CLASSES), (90, 7, 41, 2, 66, 13)))
    write_coco_copy(voc, tmp_path / "coco", sparse)
    results = {}
    for name, root, splits in (("voc", voc, ["test"]), ("coco", tmp_path / "coco", ["test"])):
        dataset = load_dataset(root, splits, SYNTHETIC_CLASSES, allow_missing=True)
        evaluator = make_evaluator(["voc07", "voc10", "coco"], dataset.class_names, (0.01, 0.5), dataset.category_ids)
        detector = _replaying_detector(load_dataset(voc, ["test"]).samples, np.random.default_rng(1))
        results[name] = evaluate_detector(detector, dataset, 64, 4, evaluator, progress=False)
        if name == "coco":
            (tmp_path / "results.json").write_text(json.dumps(evaluator.evaluators["coco"].results_json()))
    voc_map, coco_map = results["voc"]["voc"]["map_voc07"], results["coco"]["voc"]["map_voc07"]
    assert 0.2 < voc_map[0] < 0.95 and coco_map == voc_map  # a discriminating case, equal on both copies
    # pycocotools averages over categories sorted by id: another order of the same terms (last digit)
    def numbers(stats: dict) -> list[float]:
        return [np.nan if v is None else v for key in sorted(stats) for v in np.ravel([stats[key]])]

    for on_coco, on_voc in zip(results["coco"]["coco"]["stats"], results["voc"]["coco"]["stats"], strict=True):
        assert sorted(on_coco) == sorted(on_voc)
        np.testing.assert_allclose(numbers(on_coco), numbers(on_voc), rtol=1e-12)
    direct = pycocotools_stats(tmp_path / "coco" / "annotations" / "instances_test.json", tmp_path / "results.json")
    assert 0.1 < direct[0] < 0.95
    assert [results["coco"]["coco"]["stats"][0][n] for n in STAT_NAMES] == direct


@pytest.mark.parametrize("verbose", [False, True])
def test_verbose_lists_every_problem_and_third_party_loggers_stay_at_warning(tmp_path, caplog, verbose):
    from ssd.cli import configure_logging

    root = write_label_studio(tmp_path / "ls")
    for stem in ("a", "c"):
        (root / "images" / f"{stem}.jpg").unlink()
    configure_logging(verbose)
    assert logging.getLogger("PIL.PngImagePlugin").getEffectiveLevel() == logging.WARNING
    assert logging.getLogger("ssd_datasets.coco").getEffectiveLevel() == (logging.DEBUG if verbose else logging.INFO)
    with caplog.at_level(logging.NOTSET):
        load_dataset(root, ["result"], verbose=verbose)
    summary = [r.getMessage() for r in caplog.records if "loaded result" in r.getMessage()]
    assert len(summary) == 1 and f"2 images skipped: file missing (e.g. {root / 'images' / 'a.jpg'})" in summary[0]
    listed = [r.getMessage() for r in caplog.records if "is missing (looked in" in r.getMessage()]
    assert len(listed) == (2 if verbose else 0)


@pytest.mark.slow
def test_int8_export_of_a_val_fraction_run_checks_on_the_held_out_images(tmp_path, capsys):
    """A one-split export trained with --val-fraction: the INT8 check scores the images training held
    out (its config.json names no validation split), and calibrates on the rest."""
    from ssd.cli import export as export_cli

    data = str(write_labelimg(tmp_path / "labelimg"))
    run = tmp_path / "run"
    assert train_cli.main(["--data-root", data, "--run-dir", str(run), "--width", "0.125", "--from-scratch",
                           "--iterations", "1", "--batch-size", "2", "--workers", "1", "--eval-every", "0",
                           "--val-fraction", "0.25"]) == 0
    assert json.loads((run / "config.json").read_text())["train"]["val_splits"] == []
    capsys.readouterr()
    assert export_cli.main(["--run-dir", str(run), "--out", str(tmp_path / "export"), "--checkpoint", "latest",
                            "--format", "openvino", "--int8", "--calibration-images", "2"]) == 0
    out = capsys.readouterr().out
    held_out = max(1, round(0.25 * len(IMAGES)))
    assert f"INT8 check: VOC07 mAP on {held_out} images of 0.25 of " in out
    calibration = json.loads((tmp_path / "export" / "calibration.json").read_text())
    held = {s.image_id for s in load_train_val(data, val_fraction=0.25, seed=0).val.samples}
    assert calibration["num_images"] == 2 and len(held) == held_out
    assert not held & set(calibration["image_ids"])  # calibrated on the training part only
