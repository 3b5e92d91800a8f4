"""Evaluating an exported graph of any input size: tools/evaluate.py --graph feeds original images.

A vgg512 graph resizes every image to 512 itself; evaluation must not warp the images to some
other size first. The reference here runs the frozen graph in plain TensorFlow on each original
image alone and converts its boxes to devkit pixels by hand.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import tensorflow as tf

from ssd.cli import export as export_graph
from ssd_datasets.synthetic import SYNTHETIC_CLASSES, generate_synthetic_voc, load_synthetic
from ssd.config import ModelConfig
from ssd.engine.recipe import TrainConfig
from ssd.evaluation.loop import evaluate_detector
from ssd.evaluation.voc import VOCEvaluator
from ssd.modeling.model import build_model_from_config
from ssd.modeling.run_dir import save_run_config
from ssd.records import DetectionDataset, Sample
from tests.test_export import plain_tf_frozen_graph
from ssd.cli import evaluate as evaluate_cli


@pytest.fixture(scope="module")
def graph_and_data(tmp_path_factory) -> tuple[Path, Path]:
    """A slim untrained vgg512 export and six test images of 64..66 pixels a side."""
    root = tmp_path_factory.mktemp("graph512")
    tf.keras.utils.set_random_seed(0)
    config = ModelConfig("vgg512", SYNTHETIC_CLASSES, width=0.125)
    model = build_model_from_config(config)
    save_run_config(root / "run", config, TrainConfig().to_dict())
    tf.train.CheckpointManager(tf.train.Checkpoint(model=model), str(root / "run" / "checkpoints"), 1).save()
    with contextlib.redirect_stdout(io.StringIO()):
        assert export_graph.main(["--run-dir", str(root / "run"), "--out", str(root / "export"),
                                  "--checkpoint", "latest", "--max-detections", "30"]) == 0
    generate_synthetic_voc(root / "voc", num_train=1, num_test=6, image_size_range=(64, 66))
    return root / "export", root / "voc"


def read_results(directory: Path) -> dict[tuple[str, str], np.ndarray]:
    """(class, image id) -> rows [score, xmin, ymin, xmax, ymax] sorted by score, from comp4 files."""
    rows: dict[tuple[str, str], list[list[float]]] = {}
    for name in SYNTHETIC_CLASSES:
        for line in (directory / f"comp4_det_test_{name}.txt").read_text().splitlines():
            image_id, *numbers = line.split()
            rows.setdefault((name, image_id), []).append([float(v) for v in numbers])
    return {key: np.array(sorted(value, key=lambda r: -r[0])) for key, value in rows.items()}


def reference_results(pb_path: Path, voc_root: Path) -> dict[tuple[str, str], np.ndarray]:
    """The graph on each original image; boxes rel (ymin, xmin, ymax, xmax) -> devkit 1-based pixels."""
    rows: dict[tuple[str, str], list[list[float]]] = {}
    for sample in load_synthetic(voc_root, "test").samples:
        image = cv2.cvtColor(cv2.imread(sample.image_path), cv2.COLOR_BGR2RGB)
        height, width = image.shape[:2]
        out = plain_tf_frozen_graph(pb_path, image[None])
        for k in range(int(out["num_detections"][0])):
            ymin, xmin, ymax, xmax = out["detection_boxes"][0, k].astype(np.float64)
            name = SYNTHETIC_CLASSES[int(out["detection_classes"][0, k]) - 1]
            box = [xmin * width + 1, ymin * height + 1, xmax * width, ymax * height]
            rows.setdefault((name, sample.image_id), []).append([float(out["detection_scores"][0, k]), *box])
    return {key: np.array(sorted(value, key=lambda r: -r[0])) for key, value in rows.items()}


@pytest.mark.slow
def test_export_records_its_input_size(graph_and_data):
    export, _ = graph_and_data
    info = json.loads((export / "export.json").read_text())
    assert info["image_size"] == 512 and info["preset"] == "vgg512" and info["postprocess"]["max_detections"] == 30


@pytest.mark.slow
def test_evaluating_a_vgg512_graph_gives_the_graph_detections_on_original_images(graph_and_data, tmp_path):
    export, voc = graph_and_data
    # Batches of 4: the six images (three sizes) go to the graph as runs of one size.
    code = evaluate_cli.main(["--graph", str(export), "--data-root", str(voc), "--split", "test",
                              "--batch-size", "4", "--write-results", str(tmp_path / "results"),
                              "--confidence-levels", "0.01", "--no-progress"])
    assert code == 0
    got, want = read_results(tmp_path / "results"), reference_results(export / "frozen_inference_graph.pb", voc)
    assert got.keys() == want.keys() and sum(len(v) for v in want.values()) == 6 * 30
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=0, atol=1e-4, err_msg=str(key))


@pytest.mark.slow
def test_image_size_other_than_the_graphs_is_refused(graph_and_data, capsys):
    export, voc = graph_and_data
    code = evaluate_cli.main(["--graph", str(export), "--data-root", str(voc), "--split", "test",
                              "--image-size", "300", "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert "--image-size 300" in err and "512" in err and "export.json" in err


def test_original_size_batches_hold_one_image_size_each(tmp_path):
    """With image_size=None the detector gets consecutive images of one size per call, in order."""
    shapes = [(5, 7), (5, 7), (6, 7), (5, 7), (5, 7), (5, 7), (9, 9)]  # batches of 3: [a a b] [a a a] [c]
    samples = []
    for i, (h, w) in enumerate(shapes):
        path = tmp_path / f"{i}.png"
        cv2.imwrite(str(path), np.full((h, w, 3), i, np.uint8))
        samples.append(Sample(str(i), str(path), w, h))
    calls = []

    def detector(images: np.ndarray) -> dict[str, np.ndarray]:
        calls.append((images.shape, images[:, 0, 0, 0].tolist()))
        b = len(images)
        return {"detection_boxes": np.zeros((b, 1, 4), np.float32), "detection_scores": np.zeros((b, 1), np.float32),
                "detection_classes": np.ones((b, 1), np.float32), "num_detections": np.zeros(b, np.float32)}

    dataset = DetectionDataset(("thing",), tuple(samples))
    evaluate_detector(detector, dataset, None, 3, VOCEvaluator(("thing",)), progress=False)
    assert calls == [((2, 5, 7, 3), [0, 1]), ((1, 6, 7, 3), [2]), ((3, 5, 7, 3), [3, 4, 5]), ((1, 9, 9, 3), [6])]
