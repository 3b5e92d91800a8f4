"""Export: the frozen graph and SavedModel, loaded with plain TensorFlow, reproduce the library's detector,
which takes the same input (uint8 RGB, any size) and the same post-processing options."""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import tensorflow as tf

from ssd.cli import export as export_graph
from ssd.config import ModelConfig
from ssd.engine.recipe import TrainConfig
from ssd.core.postprocess import PostprocessOptions, postprocess
from ssd.deploy.export import export_run, write_label_map
from ssd.deploy.runtimes import load_detector
from ssd.modeling.inference import Detector, resize_in_graph
from ssd.modeling.model import build_model_from_config, fold_channel_flip
from ssd.modeling.run_dir import load_trained_model, save_run_config

CLASSES = ("circle", "square", "triangle")
OUTPUTS = ("detection_boxes", "detection_scores", "detection_classes", "num_detections")
TOP = 20  # detections compared per image; an untrained model's scores below that tie too often


def make_run_dir(run_dir: Path) -> None:
    """A run directory with an untrained slim model (width 0.125) and one checkpoint."""
    tf.keras.utils.set_random_seed(0)
    config = ModelConfig("vgg300", CLASSES, width=0.125)
    model = build_model_from_config(config)
    save_run_config(run_dir, config, TrainConfig().to_dict())
    tf.train.CheckpointManager(tf.train.Checkpoint(model=model), str(run_dir / "checkpoints"), 1).save()


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, Path, str]:
    root = tmp_path_factory.mktemp("export")
    make_run_dir(root / "run")
    out = root / "out"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = export_graph.main(["--run-dir", str(root / "run"), "--out", str(out), "--score-threshold", "0.01",
                                  "--max-detections", "50", "--checkpoint", "latest"])
    assert code == 0
    return root / "run", out, stdout.getvalue()


def images_at(size: int, count: int = 2) -> np.ndarray:
    return np.random.default_rng(size).integers(0, 256, (count, size, size, 3), np.uint8)


def keras_reference(run_dir: Path, images: np.ndarray) -> dict[str, np.ndarray]:
    model, config = load_trained_model(run_dir, "latest")
    return Detector(model, config, PostprocessOptions(score_threshold=0.01, max_detections=50)).detect(images)


def plain_tf_frozen_graph(pb_path: Path, images: np.ndarray) -> dict[str, np.ndarray]:
    """What a TF Object Detection API consumer does: only tf.compat.v1, no ssd import."""
    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(pb_path.read_bytes())
    with tf.Graph().as_default() as graph:
        tf.graph_util.import_graph_def(graph_def, name="")
        fetches = {name: graph.get_tensor_by_name(f"{name}:0") for name in OUTPUTS}
        with tf.compat.v1.Session(graph=graph) as session:
            return session.run(fetches, {graph.get_tensor_by_name("image_tensor:0"): images})


def assert_same_detections(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    np.testing.assert_array_equal(got["num_detections"], want["num_detections"])
    assert want["num_detections"].min() >= TOP  # an untrained model at threshold 0.01 fills the list
    np.testing.assert_allclose(got["detection_scores"][:, :TOP], want["detection_scores"][:, :TOP], atol=1e-5)
    np.testing.assert_allclose(got["detection_boxes"][:, :TOP], want["detection_boxes"][:, :TOP], atol=1e-4)
    np.testing.assert_array_equal(got["detection_classes"][:, :TOP], want["detection_classes"][:, :TOP])


@pytest.mark.slow
def test_frozen_graph_in_plain_tf_matches_keras_detector(exported):
    run_dir, out, _ = exported
    images = images_at(300)  # at the input size the in-graph resize is the identity
    assert_same_detections(plain_tf_frozen_graph(out / "frozen_inference_graph.pb", images),
                           keras_reference(run_dir, images))


@pytest.mark.slow
def test_saved_model_signature_matches_keras_detector(exported):
    run_dir, out, _ = exported
    signature = tf.saved_model.load(str(out / "saved_model")).signatures["serving_default"]
    assert set(signature.structured_outputs) == set(OUTPUTS)
    images = images_at(300)
    got = {k: v.numpy() for k, v in signature(image_tensor=tf.constant(images)).items()}
    assert_same_detections(got, keras_reference(run_dir, images))


@pytest.mark.slow
def test_any_image_size_gives_normalised_boxes_of_the_resized_image(exported):
    run_dir, out, _ = exported
    image = np.random.default_rng(7).integers(0, 256, (1, 177, 251, 3), np.uint8)
    got = plain_tf_frozen_graph(out / "frozen_inference_graph.pb", image)
    assert got["detection_boxes"].shape == (1, 50, 4)
    assert 0.0 <= got["detection_boxes"].min() and got["detection_boxes"].max() <= 1.0
    # The graph warps to 300x300 like training's cv2.resize: same detections as the Keras
    # detector on the cv2-resized image, up to a grey level of rounding: each of the graph's top 5
    # is among the reference's top 10 (near-equal scores may swap places) with the same class.
    resized = cv2.resize(image[0], (300, 300), interpolation=cv2.INTER_LINEAR)[None]
    want = keras_reference(run_dir, resized)
    for box, cls in zip(got["detection_boxes"][0, :5], got["detection_classes"][0, :5]):
        same_class = want["detection_classes"][0, :10] == cls
        errors = np.abs(want["detection_boxes"][0, :10][same_class] - box).max(axis=1, initial=0.0)
        assert same_class.any() and errors.min() < 2e-2


@pytest.mark.slow
def test_cli_prints_names_and_writes_label_files(exported):
    _, out, stdout = exported
    assert "image_tensor" in stdout and "num_detections" in stdout
    assert re.search(r"frozen +\S+frozen_inference_graph.pb", stdout) and "saved_model" in stdout
    assert (out / "labels.txt").read_text().splitlines() == list(CLASSES)
    ids = [int(v) for v in re.findall(r"id: (\d+)", (out / "label_map.pbtxt").read_text())]
    assert ids == [1, 2, 3]


OPTIONS = PostprocessOptions(score_threshold=0.02, iou_threshold=0.5, top_k_per_class=60, max_detections=25)


@pytest.fixture(scope="module")
def frozen_export(tmp_path_factory) -> tuple[Path, Path]:
    """(run directory, export directory) of a frozen graph exported with non-default OPTIONS."""
    root = tmp_path_factory.mktemp("frozen")
    make_run_dir(root / "run")
    export_run(root / "run", root / "out", "latest", OPTIONS, formats=("frozen",))
    return root / "run", root / "out"


def library_detector(run_dir: Path, options: PostprocessOptions) -> Detector:
    """The library's detector on the run's model, its RGB->BGR flip folded into conv1_1 as every export does."""
    model, config = load_trained_model(run_dir, "latest")
    return Detector(fold_channel_flip(model), config, options)


def test_export_info_records_the_options_every_format_bakes_in(frozen_export):
    _, out = frozen_export
    info = json.loads((out / "export.json").read_text())
    assert PostprocessOptions.from_dict(info["postprocess"]) == OPTIONS
    assert (info["image_size"], info["preset"]) == (300, "vgg300")


def test_detector_on_a_640x480_batch_equals_the_frozen_graph(frozen_export):
    run_dir, out = frozen_export
    images = np.random.default_rng(640).integers(0, 256, (2, 480, 640, 3), np.uint8)
    got = library_detector(run_dir, OPTIONS).detect(images)
    want = load_detector(out)(images)
    assert want["detection_scores"].shape == (2, OPTIONS.max_detections)
    for name in OUTPUTS:
        np.testing.assert_allclose(got[name], want[name], rtol=0, atol=1e-5, err_msg=name)


def test_detector_refuses_images_that_are_not_uint8_rgb(frozen_export):
    detector = library_detector(frozen_export[0], OPTIONS)
    with pytest.raises(ValueError, match=r"images must be uint8 \[B, H, W, 3\] RGB, got float32 \(1, 64, 64, 3\)"):
        detector.detect(np.zeros((1, 64, 64, 3), np.float32))  # a cast would wrap or truncate pixels silently
    with pytest.raises(ValueError, match=r"got uint8 \(1, 64, 64\)"):
        detector.detect(np.zeros((1, 64, 64), np.uint8))


def test_frozen_graph_detector_and_postprocess_give_the_same_detections(frozen_export):
    run_dir, out = frozen_export
    images = np.random.default_rng(5).integers(0, 256, (2, 211, 157, 3), np.uint8)
    detector = library_detector(run_dir, OPTIONS)
    heads = detector.head_outputs(tf.constant(images))
    direct = postprocess(heads["box_deltas"], heads["class_logits"], detector.anchors, OPTIONS)
    frozen, library = load_detector(out)(images), detector.detect(images)
    assert 0 < frozen["num_detections"].min() and frozen["num_detections"].max() <= OPTIONS.max_detections
    for name in OUTPUTS:
        np.testing.assert_allclose(library[name], frozen[name], rtol=0, atol=1e-5, err_msg=name)
        np.testing.assert_allclose(direct[name].numpy(), frozen[name], rtol=0, atol=1e-5, err_msg=name)


def test_every_consumer_takes_the_one_postprocess_default(monkeypatch, tmp_path):
    """Change the default in its one place: the detector, the export and its CLI all follow."""
    changed = PostprocessOptions(0.02, 0.5, 60, 9)
    monkeypatch.setattr(PostprocessOptions.__init__, "__defaults__", tuple(changed.to_dict().values()))
    make_run_dir(tmp_path / "run")
    export_run(tmp_path / "run", tmp_path / "out", "latest", formats=("frozen",))
    assert json.loads((tmp_path / "out" / "export.json").read_text())["postprocess"] == changed.to_dict()
    image = np.zeros((1, 64, 48, 3), np.uint8)
    assert load_detector(tmp_path / "out")(image)["detection_scores"].shape == (1, 9)
    detector = library_detector(tmp_path / "run", None)
    assert detector.options == changed and detector.detect(image)["detection_scores"].shape == (1, 9)
    args = export_graph.build_parser().parse_args(["--run-dir", "run", "--out", "out"])
    assert export_graph.postprocess_options_from(args) == changed


def test_cli_flags_give_the_options_and_a_bad_one_is_refused_by_name(tmp_path, capsys):
    args = export_graph.build_parser().parse_args(["--run-dir", "r", "--out", "o", "--score-threshold", "0.3",
                                                   "--iou-threshold", "0.6", "--top-k-per-class", "7",
                                                   "--max-detections", "3"])
    assert export_graph.postprocess_options_from(args) == PostprocessOptions(0.3, 0.6, 7, 3)
    assert export_graph.main(["--run-dir", str(tmp_path / "run"), "--out", str(tmp_path / "out"),
                              "--top-k-per-class", "0"]) == 2
    assert "PostprocessOptions.top_k_per_class must be an integer >= 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # refused before anything is written


def test_tf_resize_matches_cv2_inter_linear_within_one_grey_level():
    rng = np.random.default_rng(3)
    for height, width in ((480, 640), (120, 90)):  # down- and up-sampling
        image = rng.integers(0, 256, (height, width, 3), np.uint8)
        image = cv2.GaussianBlur(image, (5, 5), 0)  # natural-image-like: no pathological aliasing
        want = cv2.resize(image, (300, 300), interpolation=cv2.INTER_LINEAR).astype(int)
        got = resize_in_graph(tf.constant(image[None]), 300).numpy()[0].astype(int)
        assert np.abs(got - want).max() <= 1


def test_label_map_is_od_api_pbtxt(tmp_path):
    write_label_map(tmp_path / "m.pbtxt", ("cat", "it's"))
    assert (tmp_path / "m.pbtxt").read_text() == (
        "item {\n  id: 1\n  name: 'cat'\n  display_name: 'cat'\n}\n"
        "item {\n  id: 2\n  name: 'it\\'s'\n  display_name: 'it\\'s'\n}\n"
    )
