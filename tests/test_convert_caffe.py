"""Tests for ssd/modeling/convert/caffe.py and the Caffe side of convert.py, on .caffemodel files
written here by an independent encoder: the protobuf wire format by hand, with caffe.proto's field
numbers (NetParameter.layer 100 / .layers 2; LayerParameter name 1, type 2, blobs 7;
V1LayerParameter name 4, type 5, blobs 6; BlobProto num/channels/height/width 1-4, data 5,
shape 7, double_data 8; BlobShape dim 1)."""

from __future__ import annotations

import re
import struct

import hostile_files as hf
import keras
import numpy as np
import pytest
from numpy_reference import numpy_conv

from ssd.config import COCO_DEFAULT_BOXES, DEFAULT_BOXES
from ssd.modeling.convert.caffe import parse_net, read_caffemodel
from ssd.modeling.convert.convert import convert_to_run_dir, load_base_weights, read_caffe
from ssd.modeling.convert.mapping import BASE_LAYERS, NORM, assign, caffe_name, detector_layers
from ssd.modeling.model import build_model
from ssd.modeling.run_dir import load_trained_model

SLIM = 0.125
VOC = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
       "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")


# -- the independent encoder

def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def field(number: int, wire: int, payload: bytes | int) -> bytes:
    key = varint(number << 3 | wire)
    if wire == 0:
        return key + varint(payload)
    if wire == 2:
        return key + varint(len(payload)) + payload
    return key + payload  # fixed 32 / 64 bit


def blob(array: np.ndarray, legacy_dims: bool = False, packed: bool = True, double: bool = False) -> bytes:
    """A BlobProto: shape (BlobShape, packed int64 dims) or legacy num/channels/height/width."""
    array = np.asarray(array)
    if legacy_dims:
        dims = (1,) * (4 - array.ndim) + array.shape
        head = b"".join(field(number, 0, d) for number, d in zip((1, 2, 3, 4), dims))
    else:
        head = field(7, 2, field(1, 2, b"".join(varint(d) for d in array.shape)))
    values = array.ravel()
    if double:
        data = field(8, 2, values.astype("<f8").tobytes())
    elif packed:
        data = field(5, 2, values.astype("<f4").tobytes())
    else:
        data = b"".join(field(5, 5, struct.pack("<f", v)) for v in values)
    return data + head  # fields in an unusual order: a reader must not depend on it


def layer_v2(name: str, blobs: list[bytes], kind: str = "Convolution") -> bytes:
    body = field(1, 2, name.encode()) + field(2, 2, kind.encode()) + field(3, 2, b"bottom") + field(4, 2, b"top")
    return field(100, 2, body + b"".join(field(7, 2, b) for b in blobs))


def layer_v1(name: str, blobs: list[bytes], kind: int = 4) -> bytes:
    body = field(2, 2, b"bottom") + field(3, 2, b"top") + field(4, 2, name.encode()) + field(5, 0, kind)
    return field(2, 2, body + b"".join(field(6, 2, b) for b in blobs))


def net(layers: list[bytes], name: str = "VGG_VOC0712_SSD_300x300") -> bytes:
    return field(1, 2, name.encode()) + b"".join(layers) + layer_v2("relu1_1", [], "ReLU")


def caffe_weights(model: keras.Model, layers: tuple[str, ...], seed: int = 0) -> dict[str, list[np.ndarray]]:
    """Random blobs in Caffe's layout for `layers` of `model`: weight (out, in, kh, kw), bias (out,)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name in layers:
        shapes = [tuple(w.shape) for w in model.get_layer(name).weights]
        if name == NORM:
            out[name] = [rng.uniform(5, 25, shapes[0]).astype(np.float32)]
        else:
            kh, kw, cin, cout = shapes[0]
            scale = np.sqrt(2.0 / (kh * kw * cin))
            out[name] = [(rng.standard_normal((cout, cin, kh, kw)) * scale).astype(np.float32),
                         rng.standard_normal(cout).astype(np.float32) * 0.1]
    return out


def write_caffemodel(path, weights: dict[str, list[np.ndarray]], v1: bool = False, legacy_dims: bool = False):
    encode = layer_v1 if v1 else layer_v2
    path.write_bytes(net([encode(caffe_name(n), [blob(a, legacy_dims) for a in arrays])
                          for n, arrays in weights.items()]))
    return path


# -- the reader

def test_reader_takes_v2_v1_legacy_shapes_packed_unpacked_and_double(tmp_path):
    a = np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2) - 5.5
    b = np.array([1.5, -2.0, 3.25], np.float32)
    data = net([
        layer_v2("conv1_1", [blob(a), blob(b, packed=False)]),
        layer_v1("fc7", [blob(a, legacy_dims=True), blob(b, legacy_dims=True, double=True)]),
        layer_v2("conv4_3_norm", [blob(b)], "Normalize"),
    ])
    (tmp_path / "m.caffemodel").write_bytes(data)
    layers = read_caffemodel(tmp_path / "m.caffemodel")
    assert list(layers) == ["conv1_1", "fc7", "conv4_3_norm"]  # relu1_1 has no blobs
    np.testing.assert_array_equal(layers["conv1_1"][0], a)
    np.testing.assert_array_equal(layers["conv1_1"][1], b)
    np.testing.assert_array_equal(layers["fc7"][0], a)
    assert layers["fc7"][1].shape == (1, 1, 1, 3) and layers["fc7"][1].dtype == np.float32
    np.testing.assert_array_equal(layers["fc7"][1].ravel(), b)
    np.testing.assert_array_equal(layers["conv4_3_norm"][0], b)


def test_varint_dims_above_127_and_multi_byte_lengths():
    big = np.zeros((300, 2), np.float32)
    big[299, 1] = 7.0
    layers = parse_net(net([layer_v2("conv5_3", [blob(big)])]))
    assert layers["conv5_3"][0].shape == (300, 2) and layers["conv5_3"][0][299, 1] == 7.0


@pytest.mark.parametrize("data, message", [
    (net([layer_v2("fc6", [blob(np.ones(3))])])[:-9], "runs past the end|claims"),
    (field(100, 2, field(7, 2, field(5, 2, np.ones(3, "<f4").tobytes()) + field(1, 0, 2))), "shape \\(2, 0, 0, 0\\) holds 3"),
    (b"name: 'VGG' layer { name: 'conv1_1' }", "wire type|runs past|claims"),
])
def test_malformed_files_are_refused_with_the_file_name(tmp_path, data, message):
    path = tmp_path / "bad.caffemodel"
    path.write_bytes(data)
    with pytest.raises(ValueError, match=message) as info:
        read_caffemodel(path)
    assert str(path) in str(info.value)


def test_cli_help_names_the_sources(capsys):
    from tools import convert_weights

    with pytest.raises(SystemExit) as info:
        convert_weights.main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert ".caffemodel" in text and ".pth" in text and "--run-dir" in text and "--base-weights" in text


def test_missing_file_and_file_without_weights(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.caffemodel"):
        read_caffemodel(tmp_path / "nope.caffemodel")
    (tmp_path / "empty.caffemodel").write_bytes(net([]))
    with pytest.raises(ValueError, match="no layer with weights"):
        read_caffemodel(tmp_path / "empty.caffemodel")


# -- mapping onto the model (slim models: the same names and layouts, small shapes)

def image(seed: int = 0, size: int = 300) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (1, size, size, 3)).astype(np.uint8)


@pytest.mark.parametrize("preset, v1", [("vgg300", False), ("vgg512", True)])
def test_converted_layers_compute_caffes_convolutions(tmp_path, preset, v1):
    model = build_model(preset, 21, width=SLIM)
    weights = caffe_weights(model, detector_layers(preset))
    source = read_caffe(write_caffemodel(tmp_path / "ssd.caffemodel", weights, v1=v1, legacy_dims=v1))
    assert source.preset == preset and source.num_classes == 21 and not source.unused
    assign(model, source.tensors, source.names, detector_layers(preset), "test")

    # conv1_1 from the RGB image: Caffe sees BGR minus (104, 117, 123).
    x = image(1, model.input.shape[1])
    bgr = x[0, :40, :40, ::-1].astype(np.float64) - (104, 117, 123)
    probe = keras.Model(model.input, model.get_layer("conv1_1").output)
    ours = np.asarray(probe(x))[0, 1:39, 1:39]  # away from the 300-pixel image's border
    np.testing.assert_allclose(ours, np.maximum(numpy_conv(bgr, *weights["conv1_1"], pad=1), 0)[1:39, 1:39],
                               rtol=1e-4, atol=1e-3)
    # fc6 (dilation 6, pad 6), a strided pad-1 extra layer and the last one, on small random maps.
    rng = np.random.default_rng(2)
    last = "conv12_2" if preset == "vgg512" else "conv11_2"
    for name, side, stride, pad, dilation in (("conv6", 13, 1, 6, 6), ("conv9_2", 10, 2, 1, 1),
                                              (last, 2 if preset == "vgg512" else 3, 1, int(preset == "vgg512"), 1)):
        layer = model.get_layer(name)
        x = rng.standard_normal((1, side, side, layer.kernel.shape[2])).astype(np.float32)
        expected = np.maximum(numpy_conv(x[0], *weights[name], stride, pad, dilation), 0)
        np.testing.assert_allclose(np.asarray(layer(x))[0], expected, rtol=1e-4, atol=1e-4, err_msg=name)
    # A class head (no ReLU) and the L2 scale.
    head = model.get_layer("conv8_2_mbox_conf")
    x = rng.standard_normal((1, 5, 5, head.kernel.shape[2])).astype(np.float32)
    np.testing.assert_allclose(np.asarray(head(x))[0], numpy_conv(x[0], *weights["conv8_2_mbox_conf"], pad=1),
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(model.get_layer(NORM).get_weights()[0], weights[NORM][0])


def test_caffe_class_head_channels_are_box_major_like_ours(tmp_path):
    """Caffe's conf channel c = box * C + class lands on (default box, class) of ours."""
    model = build_model("vgg300", 21, width=SLIM)
    weights = caffe_weights(model, detector_layers("vgg300"))
    for level, source in enumerate(("conv4_3_norm", "conv7", "conv8_2", "conv9_2", "conv10_2", "conv11_2")):
        kernel, bias = weights[f"{source}_mbox_conf"]
        k = bias.size // 21
        kernel[:] = 0
        bias[:] = [1000 * level + 100 * box + cls for box in range(k) for cls in range(21)]
    source = read_caffe(write_caffemodel(tmp_path / "ssd.caffemodel", weights))
    assign(model, source.tensors, source.names, detector_layers("vgg300"), "test")
    logits = np.asarray(model(np.zeros((1, 300, 300, 3), np.uint8))["class_logits"][0])
    boxes = DEFAULT_BOXES["vgg300"]
    expected = [1000 * level + 100 * box + np.arange(21)
                for level, (side, k) in enumerate(zip(boxes.feature_map_sizes, boxes.boxes_per_location))
                for _ in range(side * side) for box in range(k)]
    np.testing.assert_array_equal(logits, np.asarray(expected, np.float32))


def test_missing_extra_and_misshaped_tensors_are_named(tmp_path):
    model = build_model("vgg300", 21, width=SLIM)
    weights = caffe_weights(model, detector_layers("vgg300"))
    del weights["conv9_1"]  # Caffe's conv7_1
    weights["conv10_2"][0] = weights["conv10_2"][0][:, :, :2, :2]  # Caffe's conv8_2, now 2x2
    source = read_caffe(write_caffemodel(tmp_path / "ssd.caffemodel", weights))
    before = model.get_layer("conv1_1").get_weights()[0].copy()
    with pytest.raises(ValueError) as info:
        assign(model, source.tensors, source.names, detector_layers("vgg300"), "ssd.caffemodel")
    text = str(info.value)
    assert "missing conv7_1 (for conv9_1)" in text
    assert "conv8_2 (for conv10_2): [(2, 2, 16, 32), (32,)], expected [(3, 3, 16, 32), (32,)]" in text
    np.testing.assert_array_equal(model.get_layer("conv1_1").get_weights()[0], before)  # nothing assigned

    weights = caffe_weights(model, detector_layers("vgg300"))
    del weights["conv4_3_norm_mbox_conf"]
    path = write_caffemodel(tmp_path / "headless.caffemodel", weights)
    with pytest.raises(ValueError, match="headless.caffemodel: missing conv4_3_norm_mbox_conf"):
        convert_to_run_dir(path, tmp_path / "run", VOC)

    weights = caffe_weights(model, detector_layers("vgg300"))
    weights["conv5_4"] = weights["conv5_3"]
    path = write_caffemodel(tmp_path / "extra.caffemodel", weights)
    with pytest.raises(ValueError, match=r"tensors \['conv5_4'\] map to no layer of a vgg300 SSD"):
        convert_to_run_dir(path, tmp_path / "run", VOC)


# -- full width: the published files' shapes

@pytest.mark.slow
def test_full_size_caffe_base_in_v1_format_initialises_the_base(tmp_path):
    """VGG_ILSVRC_16_layers_fc_reduced.caffemodel: V1 layers, legacy 4-D blob dims, an fc8 classifier."""
    model = build_model("vgg300", 21)
    weights = caffe_weights(model, BASE_LAYERS, seed=5)
    data = net([layer_v1(caffe_name(n), [blob(a, legacy_dims=True) for a in arrays]) for n, arrays in weights.items()]
               + [layer_v1("fc8", [blob(np.ones((10, 1024), np.float32), legacy_dims=True)], kind=14)])
    path = tmp_path / "VGG_ILSVRC_16_layers_fc_reduced.caffemodel"
    path.write_bytes(data)
    untouched = model.get_layer("conv8_1").get_weights()[0].copy()
    lines = load_base_weights(model, path)
    assert [line.split()[0] for line in lines] == list(BASE_LAYERS) and "fc7" in lines[-1]
    x = np.random.default_rng(6).standard_normal((1, 13, 13, 512)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(model.get_layer("conv6")(x))[0],
                               np.maximum(numpy_conv(x[0], *weights["conv6"], 1, 6, 6), 0), rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(model.get_layer("conv8_1").get_weights()[0], untouched)
    with pytest.raises(ValueError, match="ImageNet VGG-16 base, not a trained SSD.*--base-weights"):
        convert_to_run_dir(path, tmp_path / "run", VOC)

    # What train_detector.py --base-weights does: the trainer initialises a new run from it.
    from ssd.config import ModelConfig
    from ssd.engine.recipe import TrainConfig
    from ssd.engine.trainer import Trainer
    from ssd.records import DetectionDataset, Sample

    images = DetectionDataset(("a",), tuple(Sample(str(i), f"/nonexistent/{i}.jpg", 10, 10) for i in range(32)))
    trainer = Trainer(ModelConfig("vgg300", ("a",)), TrainConfig(vgg16_weights=str(path)), tmp_path / "train", images)
    np.testing.assert_array_equal(trainer.model.get_layer("conv7").get_weights()[0],
                                  weights["conv7"][0].transpose(2, 3, 1, 0))


@pytest.mark.slow
def test_the_whole_chain_on_a_converted_full_size_model(tmp_path, capsys):
    """convert -> evaluate -> export -> detect on a video, each through its CLI, at full width (the
    published SSD300's shapes, with the synthetic set's 6 classes)."""
    import cv2

    import detect
    import export_graph
    from ssd_datasets.synthetic import SYNTHETIC_CLASSES
    from tools import convert_weights, evaluate, make_synthetic_dataset, make_synthetic_video

    classes = SYNTHETIC_CLASSES
    weights = caffe_weights(build_model("vgg300", len(classes) + 1), detector_layers("vgg300"), seed=7)
    path = write_caffemodel(tmp_path / "ssd300_shapes.caffemodel", weights)
    run, data, export = tmp_path / "run", tmp_path / "data", tmp_path / "export"
    assert convert_weights.main([str(path), "--run-dir", str(run), "--classes", ",".join(classes),
                                 "--boxes", "coco"]) == 0
    assert "conv11_2_mbox_conf" in capsys.readouterr().out
    model, config = load_trained_model(run)
    assert (config.preset, config.class_names, config.mean_bgr) == ("vgg300", classes, (104.0, 117.0, 123.0))
    assert config.default_boxes == COCO_DEFAULT_BOXES["vgg300"]  # as a COCO model's must be
    for name in ("conv1_1", "conv6", "conv9_2", "conv11_2", "conv7_mbox_loc", "conv11_2_mbox_conf"):
        kernel, bias = model.get_layer(name).get_weights()
        np.testing.assert_array_equal(kernel, weights[name][0].transpose(2, 3, 1, 0), err_msg=name)
        np.testing.assert_array_equal(bias, weights[name][1], err_msg=name)
    with pytest.raises(ValueError, match="already holds a run"):
        convert_to_run_dir(path, run, classes)
    assert convert_weights.main([str(path), "--run-dir", str(tmp_path / "voc")]) == 2  # 20 VOC names, 7 outputs
    assert "has 7 outputs per box (background + 6 classes); 20 class names were given" in capsys.readouterr().err

    assert make_synthetic_dataset.main(["--out", str(data), "--train", "2", "--test", "3", "--quiet"]) == 0
    assert evaluate.main(["--run-dir", str(run), "--data-root", str(data), "--split", "test",
                          "--json", str(tmp_path / "metrics.json"), "--no-progress"]) == 0
    assert "map_voc07" in (tmp_path / "metrics.json").read_text()

    assert export_graph.main(["--run-dir", str(run), "--out", str(export)]) == 0
    video = tmp_path / "clip.mp4"
    assert make_synthetic_video.main(["--out", str(video), "--frames", "4", "--width", "160", "--height", "120"]) == 0
    assert detect.main(["--graph", str(export), str(video), "--out", str(tmp_path / "detections"),
                        "--threshold", "0.0", "--quiet"]) == 0
    lines = (tmp_path / "detections" / "clip.jsonl").read_text().splitlines()
    assert len(lines) == 4
    annotated = cv2.VideoCapture(str(tmp_path / "detections" / "clip.mp4"))
    assert annotated.get(cv2.CAP_PROP_FRAME_COUNT) == 4


def write_ssd_keras_h5(path, weights: dict[str, list[np.ndarray]]):
    """ssd_keras's save_weights layout (Keras 2): root `layer_names`, per layer `weight_names` paths."""
    import h5py

    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([b"input_1", *(caffe_name(n).encode() for n in weights)])
        f.create_group("input_1").attrs["weight_names"] = np.array([], dtype="S1")
        for ours, arrays in weights.items():
            name = caffe_name(ours)
            group = f.create_group(name)
            if ours == NORM:
                kinds, values = [f"{name}_gamma"], [arrays[0]]
            else:
                kinds, values = ["kernel", "bias"], [arrays[0].transpose(2, 3, 1, 0), arrays[1]]
            group.attrs["weight_names"] = np.array([f"{name}/{k}:0".encode() for k in kinds])
            for kind, value in zip(kinds, values):
                group[f"{name}/{kind}:0"] = value
    return path


def test_ssd_keras_h5_converts_with_caffe_names(tmp_path):
    from ssd.modeling.convert.convert import read_weights

    model = build_model("vgg512", 21, width=SLIM)
    weights = caffe_weights(model, detector_layers("vgg512"), seed=8)
    source = read_weights(write_ssd_keras_h5(tmp_path / "VGG_VOC0712_SSD_512x512_iter_120000.h5", weights))
    assert (source.preset, source.num_classes, source.unused) == ("vgg512", 21, ())
    assign(model, source.tensors, source.names, detector_layers("vgg512"), "test")
    layer = model.get_layer("conv12_2")  # ssd_keras's conv10_2: 4x4, pad 1
    x = np.random.default_rng(9).standard_normal((1, 2, 2, layer.kernel.shape[2])).astype(np.float32)
    np.testing.assert_allclose(np.asarray(layer(x))[0], np.maximum(numpy_conv(x[0], *weights["conv12_2"], pad=1), 0),
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(model.get_layer(NORM).get_weights()[0], weights[NORM][0])
    (tmp_path / "broken.h5").write_bytes(b"not hdf5")
    with pytest.raises(ValueError, match="broken.h5: not an HDF5 file"):
        read_weights(tmp_path / "broken.h5")
    base = write_ssd_keras_h5(tmp_path / "base.h5", {"conv1_1": weights["conv1_1"]})
    with pytest.raises(ValueError, match="base.h5: no layer conv4_3_norm_mbox_conf.*--base-weights"):
        read_weights(base)


# -- hostile files (issue: hardening, third round)

def test_hostile_caffe_and_ssd_keras_files_exit_2_with_one_line_naming_the_file(tmp_path, capsys):
    import h5py

    from tools import convert_weights

    wrapping = tmp_path / "wrapping.caffemodel"  # dims 2^32 x 2^32 multiply to 0 in 64-bit integers
    wrapping.write_bytes(net([layer_v2("conv1_1", [field(7, 2, field(1, 2, varint(2**32) + varint(2**32)))])]))
    latin1 = tmp_path / "latin1.caffemodel"
    latin1.write_bytes(net([layer_v2("conv1_1", [blob(np.ones(3))]).replace(b"conv1_1", b"conv\xe9_1")]))
    weights = caffe_weights(build_model("vgg300", 21, width=SLIM), detector_layers("vgg300"))
    scalar_head = write_ssd_keras_h5(tmp_path / "scalar_head.h5", weights)
    with h5py.File(scalar_head, "a") as f:
        group = f["conv4_3_norm_mbox_conf"]
        del group["conv4_3_norm_mbox_conf/bias:0"]
        group["conv4_3_norm_mbox_conf/bias:0"] = np.float32(3)
    strings = write_ssd_keras_h5(tmp_path / "strings.h5", weights)
    with h5py.File(strings, "a") as f:
        group = f["conv4_3_norm_mbox_conf"]
        del group["conv4_3_norm_mbox_conf/bias:0"]
        group["conv4_3_norm_mbox_conf/bias:0"] = np.array([b"x"] * 84)
    cases = {wrapping: r"shape \(4294967296, 4294967296\) holds 0 values",
             latin1: r"layer name b'conv\\xe9_1' is not UTF-8",
             scalar_head: r"conv4_3_norm_mbox_conf \(the first class head\) has arrays of shapes "
                          r"\[\(3, 3, 64, 84\), \(\)\]",
             strings: r"conv4_3_norm_mbox_conf/bias:0 is \|S1, not numbers"}
    for path, message in cases.items():
        line = hf.cli_error_line(capsys, convert_weights.main, path, "--run-dir", str(tmp_path / "run"))
        assert line.startswith("convert_weights.py: error: ") and re.search(message, line), line


def unpacked_floats(values: np.ndarray) -> bytes:
    """One BlobProto data field (5, fixed32) per value, as an old protobuf writer stores them: 5 bytes each."""
    rows = np.zeros((len(values), 5), np.uint8)
    rows[:, 0] = 5 << 3 | 5
    rows[:, 1:] = values.astype("<f4").view(np.uint8).reshape(-1, 4)
    return rows.tobytes()


def test_hostile_caffemodels_are_read_or_refused_in_bounded_memory(tmp_path):
    """Peak RSS of a fresh process reading them: each value used to become its own array object, so
    5 MB of unpacked floats peaked 349 MB above the imports (70 times the file)."""
    n = 1_000_000
    values = np.random.default_rng(0).standard_normal(n).astype(np.float32)
    files = {
        "wrapping": (field(7, 2, field(1, 2, varint(2**32) + varint(2**32))),
                     r"shape \(4294967296, 4294967296\) holds 0"),
        "unpacked": (unpacked_floats(values) + field(7, 2, field(1, 2, varint(n))), None),
        "many_blobs": (field(5, 2, b""), "layer 'conv1_1' has more than 16 blobs"),
        "many_dims": (field(7, 2, field(1, 2, varint(1) * n)), "blob shape of 1,000,000 bytes: more than 32 dims"),
    }
    paths = []
    for name, (blob_bytes, _) in files.items():
        blobs = [blob_bytes] * (100_000 if name == "many_blobs" else 1)
        paths.append(tmp_path / f"{name}.caffemodel")
        paths[-1].write_bytes(net([layer_v2("conv1_1", blobs)]))
    run = hf.peak_memory_of_reading("ssd.modeling.convert.caffe:read_caffemodel", paths)
    for path, (_, message), error in zip(paths, files.values(), run["result"]):
        if message is None:
            assert error is None, error
        else:
            assert error.startswith(f"Caffe model {path}: ") and re.search(message, error), error
    largest_mb = max(p.stat().st_size for p in paths) / 2**20  # the unpacked one: 4.8 MB
    assert run["peak_mb"] - run["baseline_mb"] < 6 * largest_mb, run
    np.testing.assert_array_equal(read_caffemodel(paths[1])["conv1_1"][0], values)


@pytest.mark.slow
def test_ssd_keras_h5_declaring_huge_shapes_is_refused_in_bounded_memory(tmp_path):
    """A few KB of HDF5 declaring a 64 GB weight (chunked, no chunk written: reading it would fill zeros)."""
    import h5py

    weights = caffe_weights(build_model("vgg300", 21, width=SLIM), detector_layers("vgg300"))
    path = write_ssd_keras_h5(tmp_path / "huge.h5", weights)
    with h5py.File(path, "a") as f:
        group = f["conv4_3_norm_mbox_conf"]
        del group["conv4_3_norm_mbox_conf/kernel:0"]
        group.create_dataset("conv4_3_norm_mbox_conf/kernel:0", shape=(1 << 17, 1 << 17), dtype="<f4",
                             chunks=(64, 64))
    assert path.stat().st_size < 4_000_000  # the slim model's other weights
    run = hf.peak_memory_of_reading("ssd.modeling.convert.convert:read_weights", [path])
    message = run["result"][0]
    assert message.startswith(f"Keras weights file {path}: its layers declare 68,7"), message  # 2^36 bytes + the rest
    assert message.endswith("bytes, more than the 600,000,000 of any SSD this reader converts"), message
    assert run["peak_mb"] - run["baseline_mb"] < 50, run
