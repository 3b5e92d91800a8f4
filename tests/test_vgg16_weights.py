"""Tests for ssd/vgg16_weights.py on files written here in the Keras Applications VGG-16 layout."""

from __future__ import annotations

from pathlib import Path

import h5py
import keras
import numpy as np
import pytest

from ssd.config import CAFFE_BGR_MEAN
from ssd.modeling.model import build_model
from ssd.modeling.vgg16_weights import (
    EXPECTED_FILE,
    decimate_fc6,
    decimate_fc7,
    load_vgg16_weights,
    read_layer_weights,
)

# The published file's layers, in order (Keras 1 names: "<layer>_W_1:0", "<layer>_b_1:0").
CONVS = [f"block{b}_conv{i}" for b, n in enumerate((2, 2, 3, 3, 3), 1) for i in range(1, n + 1)]
CHANNELS = (3, 64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)
LAYER_NAMES = (
    ["input_1", *CONVS[:2], "block1_pool", *CONVS[2:4], "block2_pool", *CONVS[4:7], "block3_pool",
     *CONVS[7:10], "block4_pool", *CONVS[10:], "block5_pool", "flatten", "fc1", "fc2", "predictions"]
)


def fc1_value(row, col):
    """The test file's fc1 entry: the row in full (16 * row) plus col % 8; exact in float32."""
    return 16.0 * row + col % 8


def write_vgg16_file(path: Path, weights: dict[str, tuple[np.ndarray, np.ndarray]], fc1: bool = True) -> None:
    """A legacy Keras weights file: root `layer_names`, per-layer group with `weight_names`."""
    names = [n for n in LAYER_NAMES if fc1 or n not in ("fc1", "fc2", "predictions")]
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([n.encode() for n in names])
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"1.2.2"
        for name in names:
            group = f.create_group(name)
            if name not in weights and name != "fc1":
                group.attrs["weight_names"] = np.array([], dtype="S1")
                continue
            group.attrs["weight_names"] = np.array([f"{name}_W_1:0".encode(), f"{name}_b_1:0".encode()])
            if name == "fc1":
                # Full shape (411 MB as float32), written in chunks with compression: ~5 MB on disk.
                kernel = group.create_dataset(f"{name}_W_1:0", (25088, 4096), np.float32,
                                              chunks=(512, 4096), compression="lzf")
                for row in range(0, 25088, 512):
                    kernel[row:row + 512] = fc1_value(np.arange(row, row + 512)[:, None], np.arange(4096))
                group[f"{name}_b_1:0"] = np.arange(4096, dtype=np.float32)
            else:
                group[f"{name}_W_1:0"], group[f"{name}_b_1:0"] = weights[name]


@pytest.fixture(scope="module")
def vgg_weights():
    """Random VGG-16 conv weights (He-scaled so activations stay finite), fc2, predictions."""
    rng = np.random.default_rng(0)
    weights = {}
    for k, name in enumerate(CONVS):
        shape = (3, 3, CHANNELS[k], CHANNELS[k + 1])
        weights[name] = (
            (rng.standard_normal(shape, np.float32) * np.sqrt(2 / (9 * CHANNELS[k]))).astype(np.float32),
            rng.standard_normal(CHANNELS[k + 1], np.float32) * 0.1,
        )
    weights["fc2"] = (rng.standard_normal((4096, 4096), np.float32), rng.standard_normal(4096, np.float32))
    weights["predictions"] = (np.zeros((4096, 1000), np.float32), np.zeros(1000, np.float32))
    return weights


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory, vgg_weights):
    path = tmp_path_factory.mktemp("vgg") / EXPECTED_FILE
    write_vgg16_file(path, vgg_weights)
    return path


@pytest.fixture(scope="module")
def model():
    # The Keras VGG-16 file's own mean, so conv3_3 can be compared with keras.applications' preprocessing.
    return build_model("vgg300", 21, mean_bgr=CAFFE_BGR_MEAN)


def test_decimate_fc6_on_full_shape():
    # Every entry is its own flat index, so a wrong row or column shows as a wrong number.
    kernel = np.arange(25088 * 4096, dtype=np.int32).reshape(25088, 4096)
    bias = np.arange(4096)
    conv6, conv6_bias = decimate_fc6(kernel, bias)
    assert conv6.shape == (3, 3, 512, 1024) and conv6_bias.shape == (1024,)
    np.testing.assert_array_equal(conv6, kernel.reshape(7, 7, 512, 4096)[::3, ::3, :, ::4])
    np.testing.assert_array_equal(conv6_bias, 4 * np.arange(1024))
    # By hand: kernel position (1, 2) is pool5 cell (3, 6); channel 10, output 7 is fc column 28.
    assert conv6[1, 2, 10, 7] == ((3 * 7 + 6) * 512 + 10) * 4096 + 28


def test_decimate_fc7():
    kernel = np.arange(4096 * 4096, dtype=np.int32).reshape(4096, 4096)
    conv7, bias = decimate_fc7(kernel, np.arange(4096))
    assert conv7.shape == (1, 1, 1024, 1024)
    assert conv7[0, 0, 3, 5] == 12 * 4096 + 20
    np.testing.assert_array_equal(bias[:3], [0, 4, 8])


@pytest.mark.slow
def test_load_copies_convs_and_decimates_fc(model, vgg_file, vgg_weights):
    untouched = {n: [w.copy() for w in model.get_layer(n).get_weights()]
                 for n in ("conv4_3_norm", "conv8_1", "conv11_2", "conv7_mbox_conf")}
    report = load_vgg16_weights(model, vgg_file)
    assert list(report) == [f"conv{b}_{i}" for b, n in enumerate((2, 2, 3, 3, 3), 1)
                            for i in range(1, n + 1)] + ["conv6", "conv7"]
    for vgg, ssd in zip(CONVS, list(report)[:13]):
        assert report[ssd] == vgg
        kernel, bias = model.get_layer(ssd).get_weights()
        np.testing.assert_array_equal(kernel, vgg_weights[vgg][0])
        np.testing.assert_array_equal(bias, vgg_weights[vgg][1])
    kernel, bias = model.get_layer("conv6").get_weights()
    i, j, c, o = np.meshgrid(np.arange(3), np.arange(3), np.arange(512), np.arange(1024), indexing="ij")
    np.testing.assert_array_equal(kernel, fc1_value((3 * i * 7 + 3 * j) * 512 + c, 4 * o))
    np.testing.assert_array_equal(bias, 4.0 * np.arange(1024))
    kernel, bias = model.get_layer("conv7").get_weights()
    fc2_kernel, fc2_bias = vgg_weights["fc2"]
    rows = 4 * np.arange(1024)
    np.testing.assert_array_equal(kernel[0, 0], fc2_kernel[np.ix_(rows, rows)])
    np.testing.assert_array_equal(bias, fc2_bias[rows])
    for name, weights in untouched.items():
        for before, after in zip(weights, model.get_layer(name).get_weights()):
            np.testing.assert_array_equal(before, after)


@pytest.mark.slow
def test_features_match_keras_vgg16_reading_the_same_file(model, vgg_file):
    """Keras' own loader reads the test file; conv3_3 (before the first ceil-mode pool) agrees.

    This checks the test file's layout and our preprocessing (RGB -> BGR, Caffe mean) against
    keras.applications.vgg16.preprocess_input.
    """
    load_vgg16_weights(model, vgg_file)
    reference = keras.applications.VGG16(include_top=False, weights=None, input_shape=(300, 300, 3))
    reference.load_weights(vgg_file, by_name=True)
    image = np.random.default_rng(3).integers(0, 256, (1, 300, 300, 3)).astype(np.float32)
    expected = keras.Model(reference.input, reference.get_layer("block3_conv3").output)(
        keras.applications.vgg16.preprocess_input(image.copy()))
    ours = keras.Model(model.input, model.get_layer("conv3_3").output)(image.astype(np.uint8))
    np.testing.assert_allclose(np.asarray(ours), np.asarray(expected), rtol=1e-4, atol=1e-3)


def test_keras2_layout_and_split_attributes_are_read(tmp_path):
    path = tmp_path / "keras2.h5"
    with h5py.File(path, "w") as f:
        group = f.create_group("model_weights").create_group("block1_conv1")
        group.attrs["weight_names0"] = np.array([b"block1_conv1/kernel:0"])
        group.attrs["weight_names1"] = np.array([b"block1_conv1/bias:0"])
        group["block1_conv1/kernel:0"] = np.full((3, 3, 3, 64), 2.0, np.float32)
        group["block1_conv1/bias:0"] = np.arange(64, dtype=np.float32)
    with h5py.File(path, "r") as f:
        kernel, bias = read_layer_weights(f, "block1_conv1")
        assert kernel.shape == (3, 3, 3, 64) and kernel[0, 0, 0, 0] == 2.0
        np.testing.assert_array_equal(bias[:], np.arange(64))
        assert read_layer_weights(f, "fc1") == []


def _tiny_file(path: Path, fc: bool) -> Path:
    """All the right layer names, wrong (tiny) shapes; without fc1/fc2 like the no-top file."""
    weights = {name: (np.zeros((1, 1, 1, 2), np.float32), np.zeros(2, np.float32)) for name in CONVS}
    with h5py.File(path, "w") as f:
        for name in [*CONVS, *(["fc1", "fc2"] if fc else [])]:
            group = f.create_group(name)
            group.attrs["weight_names"] = np.array([f"{name}_W_1:0".encode(), f"{name}_b_1:0".encode()])
            kernel, bias = weights.get(name, (np.zeros((4, 4), np.float32), np.zeros(4, np.float32)))
            group[f"{name}_W_1:0"], group[f"{name}_b_1:0"] = kernel, bias
    return path


@pytest.mark.parametrize("case, error, message", [
    ("missing", FileNotFoundError, "no such file"),
    ("text", ValueError, "not an HDF5 file"),
    ("notop", ValueError, "no-top"),
    ("shapes", ValueError, r"'block1_conv1' has kernel \(1, 1, 1, 2\).*expected \(3, 3, 3, 64\)"),
])
def test_wrong_files_are_explained(model, tmp_path, case, error, message):
    path = tmp_path / "weights.h5"
    if case == "text":
        path.write_text("not weights\n")
    elif case in ("notop", "shapes"):
        _tiny_file(path, fc=case == "shapes")
    before = model.get_layer("conv1_1").get_weights()[0].copy()
    with pytest.raises(error, match=message) as info:
        load_vgg16_weights(model, path)
    text = str(info.value)
    assert str(path) in text and EXPECTED_FILE in text and "528 MB" in text
    assert "keras.applications.VGG16(weights='imagenet')" in text and "~/.keras/models/" in text
    np.testing.assert_array_equal(model.get_layer("conv1_1").get_weights()[0], before)


def test_slim_model_is_refused_before_reading(tmp_path):
    slim = build_model("vgg300", 21, width=0.125)
    with pytest.raises(ValueError, match="width-1.0 model; layer 'conv1_1'"):
        load_vgg16_weights(slim, tmp_path / "does_not_matter.h5")
