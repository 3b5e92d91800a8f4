"""INT8 with an accuracy bound (NNCF accuracy control) and the precision `--precision auto` picks from
the checks export.json records, on a slim SSD300 trained briefly on a tiny synthetic set."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from ssd.cli import export as export_graph
from ssd.config import ModelConfig
from ssd.core.anchors import Anchors
from ssd.core.losses import multibox_loss
from ssd.core.matching import training_targets
from ssd.deploy.accuracy_checks import AccuracyCheck, read_accuracy_checks, record_accuracy_checks
from ssd.deploy.quantization import ValidationSet, compare_map
from ssd.deploy.runtimes import choose_precision, cpu_has_bf16
from ssd.engine.recipe import TrainConfig
from ssd.image_io import read_rgb, resize_rgb
from ssd.modeling.model import build_model_from_config
from ssd.modeling.run_dir import save_run_config
from ssd.records import DetectionDataset, Sample
from ssd_datasets import load_dataset
from ssd_datasets.synthetic import SYNTHETIC_CLASSES, generate_synthetic_voc


def check(model: str, precision: str, value: float, max_drop: float = 0.5) -> AccuracyCheck:
    """A check against an fp32 value of 50 points on 10 images."""
    return AccuracyCheck(model, precision, "voc07", ("test",), 10, 50.0, value, max_drop, 50.0 - value <= max_drop)


def test_checks_round_trip_through_export_json_and_replace_their_own_kind(tmp_path):
    (tmp_path / "export.json").write_text(json.dumps({"image_size": 300}))
    record_accuracy_checks(tmp_path, [check("model.xml", "bf16", 49.8), check("model_int8.xml", "int8", 49.0)])
    record_accuracy_checks(tmp_path, [check("model_int8.xml", "int8", 49.7)])
    info = json.loads((tmp_path / "export.json").read_text())
    assert info["image_size"] == 300  # the rest of export.json is kept
    checks = read_accuracy_checks(tmp_path)
    assert [(c.model, c.precision, c.value) for c in checks] == [("model.xml", "bf16", 49.8),
                                                                ("model_int8.xml", "int8", 49.7)]
    assert checks[1].drop == pytest.approx(0.3)
    assert "drop 0.30 <= 0.5 points on 10 images of test" in checks[1].summary()
    (tmp_path / "export.json").write_text(json.dumps({"accuracy_checks": [{"model": "model.xml"}]}))
    with pytest.raises(ValueError, match="export.json: accuracy_checks"):
        read_accuracy_checks(tmp_path)


def test_auto_precision_follows_the_recorded_checks(tmp_path):
    for name in ("model.xml", "model_int8.xml", "frozen_inference_graph.pb"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "export.json").write_text("{}")
    choice = choose_precision(tmp_path)
    assert (choice.path.name, choice.label) == ("frozen_inference_graph.pb", "fp32")
    assert "no int8 accuracy check" in choice.reason and "--max-map-drop" in choice.reason
    record_accuracy_checks(tmp_path, [check("model.xml", "bf16", 49.9), check("model_int8.xml", "int8", 48.0)])
    choice = choose_precision(tmp_path)
    assert "int8 missed its bound" in choice.reason and "drop 2.00 > 0.5" in choice.reason
    if cpu_has_bf16():
        assert (choice.path.name, choice.precision, choice.label) == ("model.xml", "bf16", "bf16")
    else:
        assert (choice.path.name, choice.label) == ("frozen_inference_graph.pb", "fp32")
        assert "no bf16 units" in choice.reason
    record_accuracy_checks(tmp_path, [check("model_int8.xml", "int8", 49.6)])
    choice = choose_precision(tmp_path)
    assert (choice.path.name, choice.precision, choice.label) == ("model_int8.xml", "f32", "int8")
    # A file names its own runtime; an explicit precision is taken as given.
    assert choose_precision(tmp_path / "model.xml", "f32").label == "fp32"
    assert choose_precision(tmp_path / "frozen_inference_graph.pb").label == "fp32"
    with pytest.raises(ValueError, match="precision must be one of"):
        choose_precision(tmp_path, "int4")


def test_bounds_need_the_openvino_format_a_finite_number_and_annotated_images(tmp_path, capsys):
    for flags in (["--format", "frozen", "--max-map-drop", "0.5"], ["--format", "openvino", "--max-map-drop", "nan"]):
        assert export_graph.main(["--run-dir", str(tmp_path), "--out", str(tmp_path / "out"), *flags]) == 2
        assert "--max-map-drop needs openvino in --format and a finite number" in capsys.readouterr().err
    unlabelled = DetectionDataset(SYNTHETIC_CLASSES, (Sample("a", "a.jpg", 300, 300),))
    with pytest.raises(ValueError, match="validation split test has no ground truth"):
        ValidationSet(unlabelled, 300, splits=("test",))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """A width-0.125 SSD300 trained on 8 synthetic images (no augmentation), which are also its
    validation split: a model with a high mAP there, so that INT8 has accuracy to lose."""
    root = tmp_path_factory.mktemp("quantization")
    data, run = root / "data", root / "run"
    generate_synthetic_voc(data, num_train=8, num_test=0, image_size_range=(200, 300))
    dataset = load_dataset(data, ["trainval"], SYNTHETIC_CLASSES)
    keras.utils.set_random_seed(0)
    config = ModelConfig("vgg300", SYNTHETIC_CLASSES, width=0.125)
    model = build_model_from_config(config)
    images = np.stack([resize_rgb(read_rgb(s.image_path), 300, 300) for s in dataset.samples])
    boxes, labels = np.zeros((len(images), 16, 4), np.float32), np.zeros((len(images), 16), np.int32)
    for i, s in enumerate(dataset.samples):
        boxes[i, : len(s.boxes)] = s.boxes / np.array([s.width, s.height] * 2, np.float32)
        labels[i, : len(s.labels)] = s.labels
    counts = np.array([len(s.labels) for s in dataset.samples], np.int32)
    deltas, classes = training_targets(tf.constant(boxes), tf.constant(labels), tf.constant(counts),
                                       Anchors.from_config(config.default_boxes))
    optimizer = keras.optimizers.Adam(1e-3)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            out = model(images, training=True)
            loss = multibox_loss(out["box_deltas"], out["class_logits"], deltas, classes)["loss"]
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))

    for _ in range(60):  # enough for a VOC07 mAP of about 97 on these images
        step()
    save_run_config(run, config, TrainConfig(data_root=str(data), train_splits=("trainval",),
                                             val_splits=("trainval",)).to_dict())
    tf.train.CheckpointManager(tf.train.Checkpoint(model=model), str(run / "checkpoints"), 1).save()
    return data, run


def export(run: Path, out: Path, max_drop: float | None) -> str:
    """export_graph.py --format openvino --int8 [--max-map-drop `max_drop`]; its printed report. One
    calibration image: ranges too narrow for the others, a plain INT8 model that loses accuracy."""
    bound = [] if max_drop is None else ["--max-map-drop", str(max_drop)]
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert export_graph.main(["--run-dir", str(run), "--out", str(out), "--checkpoint", "latest",
                                  "--format", "openvino", "--int8", "--calibration-images", "1", *bound]) == 0
    return stdout.getvalue()


def int8_check(out: Path) -> AccuracyCheck:
    return next(c for c in read_accuracy_checks(out) if c.precision == "int8")


def map_drop(data: Path, out: Path) -> tuple[float, float]:
    """(fp32 VOC07 mAP, its drop in INT8) in points, measured from the files by `compare_map`."""
    maps = compare_map({"fp32": out / "model.xml", "int8": out / "model_int8.xml"},
                       load_dataset(data, ["trainval"], SYNTHETIC_CLASSES), 300)
    return 100 * maps["fp32"], 100 * (maps["fp32"] - maps["int8"])


@pytest.mark.slow
def test_accuracy_control_meets_a_bound_the_plain_int8_model_misses(trained, tmp_path):
    data, run = trained
    export(run, tmp_path / "plain", None)
    fp32, plain_drop = map_drop(data, tmp_path / "plain")
    assert fp32 > 30 and plain_drop > 0.1, f"INT8 must have accuracy to lose: fp32 {fp32}, drop {plain_drop}"

    bound = plain_drop / 2
    report = export(run, tmp_path / "tight", bound)
    tight = int8_check(tmp_path / "tight")
    assert tight.met and tight.drop <= bound
    assert tight.fp32 - tight.details["plain_int8"] == pytest.approx(plain_drop, abs=1e-6)  # the same plain model
    assert tight.details["kept_float"] and tight.details["quantized_operations"] > 0
    assert f"{len(tight.details['kept_float'])} put back to float" in report and "x plain INT8" in report
    # Measured again independently: the exported files, read from disk, through the VOC07 evaluator.
    assert map_drop(data, tmp_path / "tight")[1] == pytest.approx(tight.drop, abs=1e-6)
    choice = choose_precision(tmp_path / "tight")
    assert (choice.path.name, choice.label) == ("model_int8.xml", "int8")


@pytest.mark.slow
def test_an_unreachable_bound_leaves_the_float_model_the_default(trained, tmp_path):
    _, run = trained
    out = tmp_path / "export"
    # A bound no INT8 model can meet: 100 points better than fp32.
    report = export(run, out, -100.0)
    missed = int8_check(out)
    assert not missed.met and missed.drop > -100.0
    assert "MISSED" in report and "model_int8.xml was not written; the float model stays the default" in report
    assert not (out / "model_int8.xml").exists() and not (out / "model_int8.bin").exists()
    choice = choose_precision(out)
    assert (choice.path.name, choice.precision, choice.label) == ("model.xml", "f32", "fp32")
    assert "no int8 accuracy check" in choice.reason or "int8 missed its bound" in choice.reason
