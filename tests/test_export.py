"""Export: the frozen graph and SavedModel, loaded with plain TensorFlow, reproduce the Keras detector."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import tensorflow as tf

from ssd.cli import export as export_graph
from ssd.config import ModelConfig
from ssd.engine.recipe import TrainConfig
from ssd.deploy.export import resize_in_graph, write_label_map
from ssd.modeling.inference import Detector
from ssd.modeling.model import build_model_from_config
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
    return Detector(model, config, score_threshold=0.01, max_detections=50).detect(images)


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
