"""Tests for ssd/modeling/model.py: topology numbers from the paper, Caffe padding, head order vs
default boxes, preprocessing."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from numpy_reference import numpy_conv

from ssd.core.anchors import box_shapes, default_boxes
from ssd.config import DEFAULT_BOXES, SSD_MEAN_BGR, DefaultBoxConfig, ModelConfig
from ssd.modeling.model import (
    CaffePreprocess,
    L2Normalization,
    PaddedConv2D,
    build_model,
    build_model_from_config,
    fold_channel_flip,
    kernel_weights,
    scaled_channels,
    source_map_sizes,
)

SLIM = 0.125  # 8..128 channels: builds and runs in well under a second


@pytest.fixture(scope="module")
def full_models():
    return {preset: build_model(preset, 21) for preset in ("vgg300", "vgg512")}


@pytest.fixture(scope="module")
def slim300():
    return build_model("vgg300", 21, width=SLIM)


@pytest.mark.parametrize(
    "preset, params, boxes, maps",
    [
        ("vgg300", 26_285_486, 8732, (38, 19, 10, 5, 3, 1)),
        ("vgg512", 27_188_676, 24564, (64, 32, 16, 8, 4, 2, 1)),
    ],
)
def test_paper_numbers(full_models, preset, params, boxes, maps):
    model = full_models[preset]
    assert model.count_params() == params
    assert model.output["box_deltas"].shape == (None, boxes, 4)
    assert model.output["class_logits"].shape == (None, boxes, 21)
    assert source_map_sizes(model) == maps
    assert DEFAULT_BOXES[preset].num_boxes == boxes


@pytest.mark.parametrize("preset, sizes", [("vgg300", (150, 75, 38, 19, 19)), ("vgg512", (256, 128, 64, 32, 32))])
def test_pooling_is_ceil_mode(full_models, preset, sizes):
    model = full_models[preset]
    assert tuple(model.get_layer(f"pool{i}").output.shape[1] for i in range(1, 6)) == sizes


def test_ceil_pooling_keeps_the_last_odd_row_and_column(full_models):
    # Caffe's ceil mode gives the lone last row/column of a 75x75 map its own output.
    x = np.zeros((1, 75, 75, 256), np.float32)
    x[0, 74, 74, 0] = 5.0
    x[0, 0, 1, 1] = 7.0
    y = np.asarray(full_models["vgg300"].get_layer("pool3")(x))
    assert y.shape == (1, 38, 38, 256)
    assert y[0, 37, 37, 0] == 5.0 and y[0, 0, 0, 1] == 7.0
    assert np.count_nonzero(y) == 2


def test_layer_shapes_follow_the_paper(full_models):
    model = full_models["vgg512"]
    conv6 = model.get_layer("conv6")
    assert conv6.kernel.shape == (3, 3, 512, 1024) and conv6.dilation_rate == (6, 6)
    assert model.get_layer("conv7").kernel.shape == (1, 1, 1024, 1024)
    assert model.get_layer("conv12_1").output.shape[1:] == (2, 2, 128)
    assert model.get_layer("conv12_2").kernel.shape == (4, 4, 128, 256)
    assert model.get_layer("conv12_2").output.shape[1:] == (1, 1, 256)
    assert model.get_layer("conv4_3_norm").scale.shape == (512,)
    assert model.get_layer("conv8_2_mbox_conf").kernel.shape == (3, 3, 512, 6 * 21)


def test_head_order_matches_default_boxes(slim300):
    """A bias that encodes (level, box type, coordinate) must land on those default boxes."""
    config = DEFAULT_BOXES["vgg300"]
    model = keras.models.clone_model(slim300)
    names = ("conv4_3_norm", "conv7", "conv8_2", "conv9_2", "conv10_2", "conv11_2")
    for level, (name, k) in enumerate(zip(names, config.boxes_per_location)):
        loc, conf = model.get_layer(f"{name}_mbox_loc"), model.get_layer(f"{name}_mbox_conf")
        loc_bias = [100 * level + 10 * t + c for t in range(k) for c in range(4)]
        conf_bias = [100 * level + 10 * t + c / 100 for t in range(k) for c in range(21)]
        loc.set_weights([np.zeros(loc.kernel.shape), np.asarray(loc_bias)])
        conf.set_weights([np.zeros(conf.kernel.shape), np.asarray(conf_bias)])
    out = model(np.zeros((1, 300, 300, 3), np.uint8))
    deltas, logits = np.asarray(out["box_deltas"][0]), np.asarray(out["class_logits"][0])
    level, rest = np.divmod(deltas[:, 0], 100)
    box_type = rest // 10
    np.testing.assert_array_equal(deltas - deltas[:, :1], np.broadcast_to([0, 1, 2, 3], deltas.shape))
    np.testing.assert_allclose(logits[:, 0], deltas[:, 0])
    np.testing.assert_allclose(logits - logits[:, :1], np.broadcast_to(np.arange(21) / 100, logits.shape), atol=1e-3)
    anchors = default_boxes(config)
    counts = [s * s * k for s, k in zip(config.feature_map_sizes, config.boxes_per_location)]
    np.testing.assert_array_equal(level, np.repeat(np.arange(6), counts))
    for lvl in range(6):
        at_level = level == lvl
        expected_wh = box_shapes(config, lvl)[box_type[at_level].astype(int)]
        np.testing.assert_allclose(anchors[at_level, 2:], expected_wh, rtol=1e-6)


def test_flattening_is_row_column_box_type(slim300):
    """box_deltas rows are a row-major reshape of each head's (H, W, k * 4) map."""
    heads = [slim300.get_layer(f"{n}_mbox_loc").output for n in ("conv4_3_norm", "conv7", "conv8_2")]
    probe = keras.Model(slim300.input, [slim300.output["box_deltas"], *heads])
    image = np.random.default_rng(0).integers(0, 256, (1, 300, 300, 3)).astype(np.uint8)
    deltas, *maps = (np.asarray(t) for t in probe(image))
    expected = np.concatenate([m[0].reshape(-1, 4) for m in maps])
    np.testing.assert_array_equal(deltas[0, : len(expected)], expected)
    # Spot check by hand: map conv7 (19x19, 6 boxes), row 2, column 5, box type 4.
    start = 38 * 38 * 4
    np.testing.assert_array_equal(deltas[0, start + (2 * 19 + 5) * 6 + 4], maps[1][0, 2, 5, 16:20])


@pytest.mark.parametrize("preset, layer, side", [("vgg300", "conv9_2", 10), ("vgg512", "conv8_2", 32),
                                                 ("vgg512", "conv11_2", 4), ("vgg512", "conv12_2", 2)])
def test_strided_and_last_convs_pad_one_pixel_on_every_side(preset, layer, side):
    """Caffe pads (1, 1) where TensorFlow's "same" pads (0, 1) on an even side: a shifted grid."""
    conv = build_model(preset, 3, width=SLIM).get_layer(layer)
    assert isinstance(conv, PaddedConv2D) and conv.pad == 1
    rng = np.random.default_rng(4)
    kernel, bias = (rng.standard_normal(w.shape).astype(np.float32) for w in conv.get_weights())
    conv.set_weights([kernel, bias])
    x = rng.standard_normal((1, side, side, kernel.shape[2])).astype(np.float32)
    caffe_weight = kernel.transpose(3, 2, 0, 1)  # (kh, kw, in, out) -> (out, in, kh, kw)
    expected = np.maximum(numpy_conv(x[0], caffe_weight, bias, conv.strides[0], 1), 0)  # ReLU
    ours = np.asarray(conv(x))[0]
    assert ours.shape == expected.shape
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-4)
    # TensorFlow's "same" (pad 0 before) would give another grid: the test tells them apart.
    if conv.strides[0] == 2:
        same = np.maximum(numpy_conv(np.pad(x[0], ((0, 1), (0, 1), (0, 0))), caffe_weight, bias, 2, 0), 0)
        assert not np.allclose(same, expected, atol=1e-3)


def test_checkpoint_of_a_same_padded_conv_restores_into_a_padded_conv(tmp_path):
    """Run directories saved when the strided convs were "same" Conv2D layers still load."""
    import tensorflow as tf

    def net(conv):
        inputs = keras.Input((10, 10, 3))
        return keras.Model(inputs, conv(inputs))

    old = net(keras.layers.Conv2D(4, 3, strides=2, padding="same", name="conv9_2"))
    old.get_layer("conv9_2").set_weights([np.full((3, 3, 3, 4), 0.5, np.float32), np.arange(4, dtype=np.float32)])
    path = tf.train.Checkpoint(model=old).save(str(tmp_path / "ckpt"))
    new = net(PaddedConv2D(4, 3, strides=2, pad=1, name="conv9_2"))
    tf.train.Checkpoint(model=new).restore(path).assert_existing_objects_matched()
    for before, after in zip(old.get_layer("conv9_2").get_weights(), new.get_layer("conv9_2").get_weights()):
        np.testing.assert_array_equal(before, after)


def test_padded_conv_config_round_trip():
    conv = PaddedConv2D(4, 3, strides=2, pad=1, name="p")
    clone = PaddedConv2D.from_config(conv.get_config())
    assert (clone.pad, clone.strides, clone.padding, clone.name) == (1, (2, 2), "valid", "p")
    assert clone.compute_output_shape((None, 10, 10, 3)) == (None, 5, 5, 4)


def test_preprocessing_of_the_mean_colour_is_zero():
    mean_rgb = np.array(SSD_MEAN_BGR[::-1], np.float32)
    out = np.asarray(CaffePreprocess()(np.broadcast_to(mean_rgb, (1, 2, 3, 3))))
    np.testing.assert_allclose(out, 0.0, atol=1e-5)


def test_preprocessing_swaps_to_bgr_and_subtracts_the_mean():
    rgb = np.array([[[[10, 200, 255]]]], np.uint8)
    out = np.asarray(CaffePreprocess()(rgb))
    np.testing.assert_allclose(out[0, 0, 0], [255 - 104, 200 - 117, 10 - 123], rtol=1e-6)
    out = np.asarray(CaffePreprocess((103.939, 116.779, 123.68))(rgb))
    np.testing.assert_allclose(out[0, 0, 0], [255 - 103.939, 200 - 116.779, 10 - 123.68], rtol=1e-6)
    assert out.dtype == np.float32


def test_unflipped_preprocessing_keeps_rgb_and_subtracts_the_mean_in_rgb_order():
    rgb = np.array([[[[10, 200, 255]]]], np.uint8)
    out = np.asarray(CaffePreprocess((1.0, 2.0, 3.0), flip_channels=False)(rgb))
    np.testing.assert_allclose(out[0, 0, 0], [10 - 3, 200 - 2, 255 - 1], rtol=1e-6)


def test_folding_the_channel_flip_into_conv1_1_keeps_every_output(slim300):
    folded = fold_channel_flip(slim300)
    first = slim300.get_layer("conv1_1").get_weights()[0]
    np.testing.assert_array_equal(folded.get_layer("conv1_1").get_weights()[0], first[:, :, ::-1, :])
    assert not folded.get_layer("preprocess").flip_channels and slim300.get_layer("preprocess").flip_channels
    # Non-grey images, so that a kernel reversed the wrong way (or not at all) would show.
    images = np.random.default_rng(3).integers(0, 256, (2, 300, 300, 3)).astype(np.float32)
    want, got = slim300(images), folded(images)
    for name in ("box_deltas", "class_logits"):
        scale = np.abs(np.asarray(want[name])).max()
        np.testing.assert_allclose(np.asarray(got[name]), np.asarray(want[name]), atol=1e-5 * scale)
    with pytest.raises(ValueError, match="already folded"):
        fold_channel_flip(folded)


def test_model_subtracts_the_configured_mean():
    config = ModelConfig("vgg300", ("a",), width=SLIM, mean_bgr=(1.0, 2.0, 3.0))
    model = build_model_from_config(config)
    assert model.get_layer("preprocess").mean_bgr == (1.0, 2.0, 3.0)
    assert build_model("vgg300", 2, width=SLIM).get_layer("preprocess").mean_bgr == SSD_MEAN_BGR


def test_uint8_and_float_inputs_give_the_same_outputs(slim300):
    image = np.random.default_rng(1).integers(0, 256, (2, 300, 300, 3)).astype(np.uint8)
    a, b = slim300(image), slim300(image.astype(np.float32))
    np.testing.assert_array_equal(np.asarray(a["class_logits"]), np.asarray(b["class_logits"]))
    assert a["box_deltas"].shape == (2, 8732, 4)


def test_l2_normalization_matches_numpy():
    x = np.random.default_rng(2).normal(size=(2, 3, 4, 5)).astype(np.float32)
    layer = L2Normalization(scale_init=20.0)
    y = np.asarray(layer(x))
    expected = 20.0 * x / np.sqrt((x.astype(np.float64) ** 2).sum(-1, keepdims=True) + 1e-10)
    np.testing.assert_allclose(y, expected, rtol=1e-5)
    assert [w.name for w in layer.trainable_weights] == ["scale"]
    layer.scale.assign(np.arange(1, 6, dtype=np.float32))
    expected = expected / 20.0 * np.arange(1, 6)
    np.testing.assert_allclose(np.asarray(layer(x)), expected, rtol=1e-5)
    # A zero vector stays finite (epsilon under the root).
    assert np.all(np.isfinite(np.asarray(layer(np.zeros((1, 1, 1, 5), np.float32)))))


def test_l2_normalization_config_round_trip():
    layer = L2Normalization(scale_init=7.5, epsilon=1e-6, name="n")
    clone = L2Normalization.from_config(layer.get_config())
    assert (clone.scale_init, clone.epsilon, clone.name) == (7.5, 1e-6, "n")


def test_slim_model_keeps_topology_and_default_boxes(slim300, full_models):
    full = full_models["vgg300"]
    assert slim300.get_layer("conv1_1").kernel.shape == (3, 3, 3, 8)
    assert slim300.get_layer("conv7").kernel.shape == (1, 1, 128, 128)
    assert [l.name for l in slim300.layers] == [l.name for l in full.layers]
    assert source_map_sizes(slim300) == source_map_sizes(full)
    assert slim300.output["box_deltas"].shape == full.output["box_deltas"].shape


@pytest.mark.parametrize("channels, width, expected", [(64, 1.0, 64), (64, 0.25, 16), (1024, 0.1, 102), (3, 0.01, 1), (10, 0.25, 3)])
def test_scaled_channels(channels, width, expected):
    assert scaled_channels(channels, width) == expected


def test_kernel_weights_are_every_conv_kernel_and_nothing_else(full_models):
    model = full_models["vgg300"]
    kernels = kernel_weights(model)
    # 13 VGG convs + conv6, conv7 + 8 extras + 12 head convs.
    assert len(kernels) == 35
    assert all(k.path.endswith("/kernel") and len(k.shape) == 4 for k in kernels)
    biases = sum(k.shape[-1] for k in kernels)
    assert sum(int(np.prod(k.shape)) for k in kernels) + biases + 512 == model.count_params()


def test_initialisation_is_caffe_xavier_and_zero_bias(full_models):
    layer = full_models["vgg300"].get_layer("conv3_2")
    kernel, bias = (np.asarray(w) for w in layer.get_weights())
    limit = np.sqrt(3.0 / (3 * 3 * 256))  # uniform, variance 1 / fan_in
    assert np.abs(kernel).max() <= limit and np.abs(kernel).max() > 0.99 * limit
    assert abs(kernel.std() - limit / np.sqrt(3)) < 0.01 * limit
    assert not bias.any()
    np.testing.assert_array_equal(full_models["vgg300"].get_layer("conv4_3_norm").get_weights()[0], 20.0)


def test_mixed_precision_outputs_are_float32():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = build_model("vgg300", 5, width=SLIM)
        assert model.get_layer("conv1_1").compute_dtype == "bfloat16"
        out = model(np.zeros((1, 300, 300, 3), np.uint8))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert out["box_deltas"].dtype == "float32" and out["class_logits"].dtype == "float32"
    assert out["class_logits"].shape == (1, 8732, 5)
    assert np.all(np.isfinite(np.asarray(out["class_logits"])))


def test_build_from_config_counts_background():
    model = build_model_from_config(ModelConfig("vgg512", ("cat", "dog"), width=SLIM))
    assert model.output["class_logits"].shape == (None, 24564, 3)
    assert model.input.shape == (None, 512, 512, 3)


def test_save_and_load_round_trip(slim300, tmp_path):
    path = tmp_path / "ssd.keras"
    slim300.save(path)
    loaded = keras.models.load_model(path)
    image = np.full((1, 300, 300, 3), 77, np.uint8)
    np.testing.assert_array_equal(
        np.asarray(loaded(image)["class_logits"]), np.asarray(slim300(image)["class_logits"])
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(preset="vgg400", num_classes=21), "preset must be one of"),
        (dict(preset="vgg300", num_classes=1), "num_classes"),
        (dict(preset="vgg300", num_classes=21, width=0.0), "width"),
        (dict(preset="vgg300", num_classes=21, default_boxes=DEFAULT_BOXES["vgg512"]), "source maps"),
    ],
)
def test_bad_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_model(**kwargs)


def test_custom_default_boxes_set_boxes_per_location():
    base = DEFAULT_BOXES["vgg300"]
    boxes = DefaultBoxConfig(
        image_size=300, feature_map_sizes=base.feature_map_sizes, steps=base.steps,
        min_sizes=base.min_sizes, max_sizes=base.max_sizes, aspect_ratios=((2,),) * 6,
    )
    model = build_model("vgg300", 3, width=SLIM, default_boxes=boxes)
    assert model.output["box_deltas"].shape[1] == boxes.num_boxes == 4 * sum(s * s for s in base.feature_map_sizes)
