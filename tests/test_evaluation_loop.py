"""Tests for ssd.evaluation.loop and the tools/evaluate.py CLI, on a tiny synthetic VOC-format set."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ssd_datasets.synthetic import SYNTHETIC_CLASSES, generate_synthetic_voc, load_synthetic
from ssd.evaluation.loop import evaluate_detector, evaluate_results_files
from ssd.evaluation.voc import VOCEvaluator
from ssd.evaluation.results_files import write_results_files
from ssd.cli import evaluate as evaluate_cli

MAX_DET = 10


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    generate_synthetic_voc(root, num_train=1, num_test=5, image_size_range=(64, 96))
    return root


@pytest.fixture(scope="module")
def dataset(voc_root):
    data = load_synthetic(voc_root, "test")
    assert sum(len(s.boxes) for s in data.samples) > 3  # something to detect
    return data


def _fake_detector(dataset, shift=0.0, size=32):
    """Returns each image's ground truth (in dataset order) as detections, boxes moved right by
    `shift` of their width; checks it is fed warped uint8 images of the model size."""
    samples = iter(dataset.samples)

    def detect(images):
        assert images.dtype == np.uint8 and images.shape[1:] == (size, size, 3)
        out = {k: np.zeros((len(images), MAX_DET) + ((4,) if k == "detection_boxes" else ()), np.float32)
               for k in ("detection_boxes", "detection_scores", "detection_classes")}
        out["num_detections"] = np.zeros(len(images), np.float32)
        for b in range(len(images)):
            s = next(samples)
            x1, y1, x2, y2 = s.boxes.T
            dx = shift * (x2 - x1)
            n = len(s.boxes)
            out["detection_boxes"][b, :n] = np.stack(
                [y1 / s.height, (x1 + dx) / s.width, y2 / s.height, (x2 + dx) / s.width], 1)
            out["detection_scores"][b, :n] = np.linspace(0.9, 0.5, n)
            out["detection_classes"][b, :n] = s.labels
            out["num_detections"][b] = n
        return out

    return detect


def test_perfect_detector_scores_one_and_shifted_boxes_score_lower(dataset):
    ev = VOCEvaluator(dataset.class_names, confidence_levels=(0.01, 0.7))
    perfect = evaluate_detector(_fake_detector(dataset), dataset, 32, 2, ev, progress=False)
    present = [n for n, c in perfect["classes"].items() if c["in_map"]]
    assert present and perfect["map_voc07"][0] == pytest.approx(1.0) and perfect["map_voc10"][0] == pytest.approx(1.0)
    assert perfect["num_images"] == len(dataset)
    # Moving every box right by 40% of its width drops IoU to 0.6/1.4 = 0.43 < 0.5: nothing matches.
    shifted = evaluate_detector(_fake_detector(dataset, shift=0.4), dataset, 32, 3, ev, progress=False)
    assert shifted["map_voc10"][0] == pytest.approx(0.0)
    # 20%: IoU 0.8/1.2 = 0.67, still a hit.
    small = evaluate_detector(_fake_detector(dataset, shift=0.2), dataset, 32, 4, ev, progress=False)
    assert small["map_voc10"][0] == pytest.approx(1.0)


def test_cli_evaluates_results_files(voc_root, dataset, tmp_path):
    ev = VOCEvaluator(SYNTHETIC_CLASSES)
    evaluate_detector(_fake_detector(dataset), dataset, 32, 2, ev, progress=False)
    write_results_files(tmp_path / "results", SYNTHETIC_CLASSES, *ev.devkit_detections())
    code = evaluate_cli.main([
        "--results-dir", str(tmp_path / "results"), "--data-root", str(voc_root), "--split", "test",
        "--classes", ",".join(SYNTHETIC_CLASSES), "--out", str(tmp_path / "eval"),
        "--confidence-levels", "0.01", "0.5",
    ])
    assert code == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["map_voc07"][0] == pytest.approx(1.0)
    assert metrics["confidence_levels"] == [0.01, 0.5]
    assert (tmp_path / "eval" / "pr_curves.png").stat().st_size > 1000
    # The library call gives the same numbers.
    again = evaluate_results_files(tmp_path / "results", dataset, VOCEvaluator(SYNTHETIC_CLASSES, (0.01, 0.5)))
    assert again["map_voc10"] == metrics["map_voc10"]


def test_class_mismatch_is_refused(dataset):
    with pytest.raises(ValueError, match="differ"):
        evaluate_detector(_fake_detector(dataset), dataset, 32, 2, VOCEvaluator(("a", "b")), progress=False)


def test_cli_strict_verbose_and_bad_inputs_get_one_line_errors(voc_root, tmp_path, capsys, caplog):
    import re
    import shutil

    data = tmp_path / "data"
    shutil.copytree(voc_root, data)
    stem = (data / "ImageSets" / "Main" / "test.txt").read_text().split()[0]
    xml = data / "Annotations" / f"{stem}.xml"
    xml.write_text(xml.read_text().replace("<width>", "<width>1e400", 1))  # e.g. <width>1e40096</width>
    classes = ",".join(SYNTHETIC_CLASSES)
    common = ["--data-root", str(data), "--split", "test", "--classes", classes]
    (tmp_path / "results").mkdir()
    for name in SYNTHETIC_CLASSES:  # no detections at all
        (tmp_path / "results" / f"comp4_det_test_{name}.txt").write_text("")
    assert evaluate_cli.main(["--results-dir", str(tmp_path / "results"), *common, "--strict"]) == 2
    err = capsys.readouterr().err
    assert re.search(rf"evaluate\.py: error: \S+{stem}\.xml: <size> <width> is not a finite number: .1e400", err), err
    # Without --strict the file is skipped and the summary points to a --verbose that exists.
    assert evaluate_cli.main(["--results-dir", str(tmp_path / "results"), *common]) == 0
    assert "--verbose lists each" in caplog.text and f"{stem}.xml: <size>" not in caplog.text
    caplog.clear()
    assert evaluate_cli.main(["--results-dir", str(tmp_path / "results"), *common, "--verbose"]) == 0
    assert f"{stem}.xml: <size>" in caplog.text
    # A graph that is not a GraphDef, and a missing one.
    (tmp_path / "bad.pb").write_bytes(b"\x00not a graph\xff" * 10)
    assert evaluate_cli.main(["--graph", str(tmp_path / "bad.pb"), *common]) == 2
    assert re.search(r"evaluate\.py: error: frozen graph \S+bad\.pb is not a serialized GraphDef",
                     capsys.readouterr().err)
    assert evaluate_cli.main(["--graph", str(tmp_path / "none.pb"), *common]) == 2
    assert "none.pb does not exist" in capsys.readouterr().err
