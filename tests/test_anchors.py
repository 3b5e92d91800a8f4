"""Default boxes against a plain NumPy transcription of the Caffe PriorBox layer; `Anchors`, the one value
of boxes and variances every stage takes."""

import ast
import math
from pathlib import Path

import numpy as np
import pytest

from ssd.core.anchors import Anchors, default_boxes
from ssd.config import DEFAULT_BOXES, DefaultBoxConfig, ModelConfig

ROOT = Path(__file__).resolve().parents[1]


def caffe_prior_boxes(image_size, fmaps, steps, min_sizes, max_sizes, ratios):
    """Loop-by-loop, as prior_box_layer.cpp writes them: corners, normalised."""
    out = []
    for fmap, step, lo, hi, extra in zip(fmaps, steps, min_sizes, max_sizes, ratios):
        for i in range(fmap):
            for j in range(fmap):
                cx, cy = (j + 0.5) * step, (i + 0.5) * step
                sides = [(lo, lo), (math.sqrt(lo * hi), math.sqrt(lo * hi))]
                for r in extra:
                    sides.append((lo * math.sqrt(r), lo / math.sqrt(r)))
                    sides.append((lo * math.sqrt(1 / r), lo / math.sqrt(1 / r)))
                for w, h in sides:
                    out.append([(cx - w / 2) / image_size, (cy - h / 2) / image_size,
                                (cx + w / 2) / image_size, (cy + h / 2) / image_size])
    return np.array(out)


def test_vgg300_matches_caffe_construction():
    boxes = default_boxes(DEFAULT_BOXES["vgg300"]).astype(np.float64)
    expected = caffe_prior_boxes(
        300, [38, 19, 10, 5, 3, 1], [8, 16, 32, 64, 100, 300],
        [30, 60, 111, 162, 213, 264], [60, 111, 162, 213, 264, 315],
        [[2], [2, 3], [2, 3], [2, 3], [2], [2]],
    )
    assert boxes.shape == (8732, 4)
    corners = np.concatenate([boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2], 1)
    np.testing.assert_allclose(corners, expected, atol=1e-6)


def test_counts_and_per_location():
    assert DEFAULT_BOXES["vgg300"].num_boxes == 8732
    assert DEFAULT_BOXES["vgg512"].num_boxes == 24564
    assert DEFAULT_BOXES["vgg300"].boxes_per_location == (4, 6, 6, 6, 4, 4)
    assert DEFAULT_BOXES["vgg512"].boxes_per_location == (4, 6, 6, 6, 6, 4, 4)
    assert default_boxes(DEFAULT_BOXES["vgg512"]).shape == (24564, 4)


def test_hand_worked_single_map():
    # One 1x1 map on a 100 px image: centre (0.5, 0.5); min 20, max 80 -> sides 0.2, 0.4;
    # ratio 4 (w/h) -> w = 0.2*2 = 0.4, h = 0.2/2 = 0.1, then its transpose.
    config = DefaultBoxConfig(100, (1,), (100,), (20,), (80,), ((4,),))
    expected = [[0.5, 0.5, 0.2, 0.2], [0.5, 0.5, 0.4, 0.4], [0.5, 0.5, 0.4, 0.1], [0.5, 0.5, 0.1, 0.4]]
    np.testing.assert_allclose(default_boxes(config), expected, atol=1e-7)


def test_location_major_order():
    # 2x2 map, 4 boxes per location: box 4..7 is row 0 column 1.
    config = DefaultBoxConfig(100, (2,), (50,), (10,), (20,), ((2,),))
    boxes = default_boxes(config)
    np.testing.assert_allclose(boxes[4:8, :2], [[0.75, 0.25]] * 4)
    np.testing.assert_allclose(boxes[8:12, :2], [[0.25, 0.75]] * 4)


def test_clip_keeps_boxes_inside():
    config = DefaultBoxConfig(100, (1,), (100,), (20,), (500,), ((2,),), clip=True)
    boxes = default_boxes(config)
    corners = np.concatenate([boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2], 1)
    assert corners.min() >= -1e-7 and corners.max() <= 1 + 1e-7
    np.testing.assert_allclose(boxes[1], [0.5, 0.5, 1.0, 1.0], atol=1e-7)


def test_linear_scale_follows_the_paper():
    config = DefaultBoxConfig.linear_scale(300, (38, 19, 10, 5, 3, 1), (8, 16, 32, 64, 100, 300),
                                           ((2,),) * 6, s_min=0.2, s_max=0.9)
    np.testing.assert_allclose(np.array(config.min_sizes) / 300, [0.2, 0.34, 0.48, 0.62, 0.76, 0.9])
    np.testing.assert_allclose(np.array(config.max_sizes) / 300, [0.34, 0.48, 0.62, 0.76, 0.9, 1.04])


@pytest.mark.parametrize("field,value", [
    ("steps", (8, 16)), ("aspect_ratios", ((1,),)), ("min_sizes", (0,)), ("variances", (0.1, 0.1, 0.2)),
])
def test_config_errors_name_the_field(field, value):
    kwargs = dict(image_size=100, feature_map_sizes=(1,), steps=(100,), min_sizes=(20,),
                  max_sizes=(80,), aspect_ratios=((2,),))
    kwargs[field] = value
    with pytest.raises(ValueError, match=field):
        DefaultBoxConfig(**kwargs)


def test_anchors_from_config_are_its_boxes_and_variances():
    config = DefaultBoxConfig(100, (2,), (50,), (10,), (20,), ((2,),), variances=(0.1, 0.2, 0.3, 0.4))
    anchors = Anchors.from_config(config)
    np.testing.assert_array_equal(anchors.boxes, default_boxes(config))
    assert anchors.variances == (0.1, 0.2, 0.3, 0.4) and len(anchors) == 16
    with pytest.raises(ValueError):  # shared by every graph built from it: read-only
        anchors.boxes[0, 0] = 1.0


@pytest.mark.parametrize("boxes, variances, field", [
    (np.zeros((3, 2)), (0.1, 0.1, 0.2, 0.2), "boxes"), (np.zeros((0, 4)), (0.1, 0.1, 0.2, 0.2), "boxes"),
    (np.ones((3, 4)), (0.1, 0.2, 0.2), "variances"), (np.ones((3, 4)), (0.1, 0.1, 0.0, 0.2), "variances"),
])
def test_bad_anchors_are_refused_naming_the_field(boxes, variances, field):
    with pytest.raises(ValueError, match=f"Anchors.{field}"):
        Anchors(boxes, variances)


def _by_hand(path: Path) -> list[str]:
    """Where `path` builds default boxes or reads a config's variances itself (line: code)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        called = isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None))
        reads = isinstance(node, ast.Attribute) and node.attr == "variances" \
            and getattr(node.value, "attr", None) == "default_boxes"
        if called == "default_boxes" or reads:
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_default_boxes_and_variances_are_built_in_one_place():
    """Only `Anchors.from_config` calls `default_boxes` or reads `.default_boxes.variances` (tests aside)."""
    sources = [*(ROOT / "ssd").rglob("*.py"), *(ROOT / "tools").rglob("*.py"), *ROOT.glob("*.py")]
    found = [hit for path in sources if path != ROOT / "ssd" / "core" / "anchors.py" for hit in _by_hand(path)]
    assert found == []
    assert _by_hand(ROOT / "tests" / "test_anchors.py")  # the check does see a call


def test_every_consumer_takes_the_one_anchors_value(monkeypatch):
    """Swap what `Anchors.from_config` builds: the train step and the detector (so every export) follow."""
    from ssd.engine.recipe import TrainConfig
    from ssd.deploy.tflite_export import _implements
    from ssd.engine.distribute import make_strategy
    from ssd.engine.state import build_state
    from ssd.engine.step import TrainStep
    from ssd.modeling.inference import Detector

    model_config = ModelConfig("vgg300", ("a",), width=0.125)
    plain = default_boxes(model_config.default_boxes)
    custom = Anchors(plain * [1, 1, 0.5, 0.5], (0.2, 0.2, 0.4, 0.4))
    monkeypatch.setattr(Anchors, "from_config", classmethod(lambda cls, config: custom))
    strategy = make_strategy("default")
    state = build_state(model_config, TrainConfig(from_scratch=True), strategy, steps_per_epoch=1)
    assert TrainStep(state, model_config, TrainConfig(from_scratch=True), strategy).anchors is custom
    detector = Detector(state.model, model_config)
    assert detector.anchors is custom
    # The TFLite op's box scales are 1 / variances: 5 for y with custom's 0.2.
    assert 'key: "y_scale" value { f: 5.0 }' in _implements(1, detector.options, detector.anchors)
