"""ONNX, OpenVINO and TFLite exports: each runs in its own runtime alone (no model code of this
library) and reproduces the frozen graph; INT8 twins are calibrated on the run's training split."""

from __future__ import annotations

import contextlib
import io
import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from ssd.cli import export as export_graph
from ssd_datasets.synthetic import SYNTHETIC_CLASSES, generate_synthetic_voc
from ssd.config import ModelConfig
from ssd.engine.recipe import TrainConfig
from ssd.core.anchors import Anchors
from ssd.core.postprocess import PostprocessOptions, postprocess
from ssd.deploy.onnx_export import postprocess_model
from ssd.deploy.runtimes import load_detector, model_format
from ssd.modeling.inference import Detector
from ssd.modeling.model import build_model_from_config
from ssd.modeling.run_dir import save_run_config

OUTPUTS = ("detection_boxes", "detection_scores", "detection_classes", "num_detections")
TOP = 20  # detections compared per image; an untrained model's scores below that tie too often
CALIBRATION = 6


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, Path, str]:
    """A slim untrained run on a tiny synthetic set, exported in every format with INT8 twins."""
    root = tmp_path_factory.mktemp("formats")
    data = root / "data"
    generate_synthetic_voc(data, num_train=10, num_test=0, image_size_range=(96, 128))
    tf.keras.utils.set_random_seed(0)
    config = ModelConfig("vgg300", SYNTHETIC_CLASSES, width=0.125)
    model = build_model_from_config(config)
    save_run_config(root / "run", config, TrainConfig(data_root=str(data), train_splits=("train",),
                                                      val_splits=("val",)).to_dict())
    tf.train.CheckpointManager(tf.train.Checkpoint(model=model), str(root / "run" / "checkpoints"), 1).save()
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = export_graph.main(["--run-dir", str(root / "run"), "--out", str(root / "out"), "--checkpoint", "latest",
                                  "--format", "frozen,onnx,openvino,tflite", "--int8",
                                  "--calibration-images", str(CALIBRATION), "--max-detections", "50"])
    assert code == 0
    return data, root / "out", stdout.getvalue()


def images_at(size: int, count: int = 2) -> np.ndarray:
    return np.random.default_rng(size + count).integers(0, 256, (count, size, size, 3), np.uint8)


def frozen_graph(out: Path, images: np.ndarray) -> dict[str, np.ndarray]:
    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString((out / "frozen_inference_graph.pb").read_bytes())
    with tf.Graph().as_default() as graph:
        tf.graph_util.import_graph_def(graph_def, name="")
        fetches = {name: graph.get_tensor_by_name(f"{name}:0") for name in OUTPUTS}
        with tf.compat.v1.Session(graph=graph) as session:
            return session.run(fetches, {graph.get_tensor_by_name("image_tensor:0"): images})


def assert_same_detections(got: dict[str, np.ndarray], want: dict[str, np.ndarray], atol: float = 1e-5) -> None:
    np.testing.assert_array_equal(got["num_detections"], want["num_detections"])
    assert want["num_detections"].min() >= TOP  # an untrained model at threshold 0.01 fills the list
    np.testing.assert_allclose(got["detection_scores"][:, :TOP], want["detection_scores"][:, :TOP], atol=atol)
    np.testing.assert_allclose(got["detection_boxes"][:, :TOP], want["detection_boxes"][:, :TOP], atol=1e-4)
    np.testing.assert_array_equal(got["detection_classes"][:, :TOP], want["detection_classes"][:, :TOP])


def test_onnx_runs_in_onnxruntime_alone_with_dynamic_batch(exported):
    import onnxruntime as ort

    _, out, _ = exported
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image_tensor"]
    assert [o.name for o in session.get_outputs()] == list(OUTPUTS)
    ops = {node.op_type for node in __import__("onnx").load(str(out / "model.onnx")).graph.node}
    assert "NonMaxSuppression" in ops  # the post-processing is inside the model
    for count in (1, 3):  # one file, any batch
        images = images_at(300, count)
        got = dict(zip(OUTPUTS, session.run(list(OUTPUTS), {"image_tensor": images})))
        assert_same_detections(got, frozen_graph(out, images))


def test_openvino_ir_runs_in_openvino_alone_at_fp32(exported):
    import openvino as ov

    _, out, _ = exported
    compiled = ov.Core().compile_model(str(out / "model.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    images = images_at(300, 2)
    result = compiled(images)
    got = {name: result[compiled.output(name)] for name in OUTPUTS}
    assert_same_detections(got, frozen_graph(out, images))


def test_tflite_runs_in_litert_alone_without_flex(exported):
    from ai_edge_litert.interpreter import Interpreter

    _, out, _ = exported
    interpreter = Interpreter(model_path=str(out / "model.tflite"))
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    assert "TFLite_Detection_PostProcess" in ops
    assert not [op for op in ops if op.startswith("Flex")]
    image = images_at(300, 1)
    got = interpreter.get_signature_runner()(image_tensor=image)
    want = frozen_graph(out, image)
    # The Object Detection API's TFLite convention: class indices 0..C-1 (the frozen graph's minus
    # one) and boxes as decoded (the frozen graph clips them to the image).
    assert got["detection_boxes"].max() > 1.0 or got["detection_boxes"].min() < 0.0
    assert_same_detections({**got, "detection_classes": got["detection_classes"] + 1,
                            "detection_boxes": np.clip(got["detection_boxes"], 0.0, 1.0)}, want)


def test_tflite_runtime_is_litert_and_loads_no_tensorflow(exported):
    """load_detector on a .tflite file runs LiteRT's interpreter: TensorFlow (and its deprecated
    tf.lite.Interpreter) is never imported."""
    import subprocess
    import sys

    _, out, _ = exported
    code = ("import sys, numpy as np\n"
            "from ssd.deploy.runtimes import load_detector\n"
            f"out = load_detector({str(out / 'model.tflite')!r})(np.zeros((2, 90, 120, 3), np.uint8))\n"
            "assert out['detection_scores'].shape == (2, 50), out['detection_scores'].shape\n"
            "assert 'ai_edge_litert' in sys.modules\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras'))\n"
            "assert not bad, bad\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_int8_models_calibrated_on_the_training_split_and_checked(exported):
    data, out, stdout = exported
    record = json.loads((out / "calibration.json").read_text())
    train_ids = (data / "ImageSets" / "Main" / "train.txt").read_text().split()
    assert record["num_images"] == CALIBRATION == len(record["image_ids"])
    assert set(record["image_ids"]) <= set(train_ids) and record["splits"] == ["train"]
    assert re.search(r"openvino +fp32 +[\d.]+% +int8 +[\d.]+% +change [+-][\d.]+ points", stdout)
    assert re.search(r"tflite +fp32 +[\d.]+% +int8 +[\d.]+% +change", stdout)
    images = images_at(300, 2)
    want = frozen_graph(out, images)
    for name in ("model_int8.xml", "model_int8.tflite"):
        got = load_detector(out / name)(images)
        assert got["detection_boxes"].shape == want["detection_boxes"].shape
        valid = got["detection_classes"][:, :TOP]
        assert ((valid >= 1) & (valid <= len(SYNTHETIC_CLASSES))).all()
        # Quantized, yet the same network: the best score stays close to the float model's.
        np.testing.assert_allclose(got["detection_scores"][:, 0], want["detection_scores"][:, 0], atol=0.1)


def test_openvino_int8_keeps_the_l2_norm_float_and_ranges_span_all_calibration_images(exported, tmp_path):
    import openvino as ov

    from ssd.deploy.openvino_export import write_int8_ir

    _, out, _ = exported
    # A black and a white image: minus the mean (104, 117, 123), every input of the first is below
    # zero and every input of the second above, so only a range over both spans [-123, 151].
    black, white = np.zeros((64, 64, 3), np.uint8), np.full((64, 64, 3), 255, np.uint8)
    model = ov.Core().read_model(str(write_int8_ir(out / "model.xml", tmp_path / "int8.xml", [black, white])))
    quantizers = [op for op in model.get_ops() if op.get_type_name() == "FakeQuantize"]
    inputs = {op.input_value(0).get_node().get_friendly_name(): op for op in quantizers}
    preprocessed = [op for name, op in inputs.items() if "preprocess" in name]
    assert len(preprocessed) == 1
    low, high = (float(np.ravel(preprocessed[0].input_value(i).get_node().get_data())[0]) for i in (1, 2))
    assert low == pytest.approx(-123, abs=1) and 151 <= high <= 153
    norm = [op for op in model.get_ops() if "conv4_3_norm" in op.get_friendly_name()
            and "mbox" not in op.get_friendly_name() and op.get_type_name() in ("ReduceSum", "Sqrt", "Multiply")]
    assert {op.get_type_name() for op in norm} >= {"ReduceSum", "Sqrt", "Multiply"}
    for op in norm:  # the sum of squares, its root and the scaling see float inputs
        assert all(value.get_node().get_type_name() != "FakeQuantize" for value in op.input_values()), op


def test_exports_read_rgb_without_reversing_channels(exported):
    """The RGB -> BGR flip is folded into conv1_1 (`fold_channel_flip`): no runtime reverses the input."""
    import onnx
    import openvino as ov

    _, out, _ = exported
    assert not {"ReverseSequence", "ReverseV2"} & {node.op_type for node in onnx.load(out / "model.onnx").graph.node}
    ir_ops = {op.get_type_name() for op in ov.Core().read_model(out / "model.xml").get_ops()}
    assert not {"ReverseSequence", "Reverse"} & ir_ops
    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString((out / "frozen_inference_graph.pb").read_bytes())
    assert "ReverseV2" not in {node.op for node in graph_def.node}


def tflite_ops(path: Path) -> tuple[list[dict], list[dict]]:
    """The flatbuffer's ops (op_name, inputs, outputs) and tensors (name, dtype, quantization), by index."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    return interpreter._get_ops_details(), interpreter.get_tensor_details()


def tflite_values(path: Path, image: np.ndarray):
    """A function: tensor index -> its value (dequantized) after running `path` on `image`."""
    from ai_edge_litert.interpreter import Interpreter

    with warnings.catch_warnings():  # "for debugging purposes only": what this helper does
        warnings.simplefilter("ignore", UserWarning)
        interpreter = Interpreter(model_path=str(path), experimental_preserve_all_tensors=True)
    input_index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(input_index, list(image.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(input_index, image)
    interpreter.invoke()
    details = interpreter.get_tensor_details()

    def value(index: int) -> np.ndarray:
        scale, zero_point = details[index]["quantization"]
        raw = interpreter.get_tensor(index).astype(np.float64)
        return (raw - zero_point) * scale if scale else raw

    return value


def float_ops(ops: list[dict], tensors: list[dict]) -> dict[int, str]:
    """Op index -> op name, of the ops whose output is float32."""
    return {op["index"]: op["op_name"] for op in ops if tensors[op["outputs"][0]]["dtype"] == np.float32}


def test_tflite_int8_keeps_the_mean_subtraction_and_the_conv4_3_l2_norm_float(exported):
    """Every convolution int8 but conv4_3, whose output the L2 normalisation reads in float."""
    _, out, _ = exported
    ops, tensors = tflite_ops(out / "model_int8.tflite")
    floats = float_ops(ops, tensors)
    assert {"SUB", "L2_NORMALIZATION", "TFLite_Detection_PostProcess"} <= set(floats.values())
    assert not [op for op in floats.values() if op.startswith("Flex")]
    l2_input = next(op["inputs"][0] for op in ops if op["op_name"] == "L2_NORMALIZATION")
    conv4_3 = next(op["index"] for op in ops if l2_input in op["outputs"])
    convs = [op["index"] for op in ops if op["op_name"] == "CONV_2D"]
    assert len(convs) == 35 and floats.get(conv4_3) == "CONV_2D"
    assert all(tensors[ops[index]["outputs"][0]]["dtype"] == np.int8 for index in convs if index != conv4_3)


def assert_conv1_1_input(path: Path, image: np.ndarray, want: np.ndarray):
    """conv1_1's input (dequantized) after running `path` on `image` equals `want` to half its step;
    returns the ops and the run's tensor values."""
    ops, tensors = tflite_ops(path)
    value = tflite_values(path, image)
    conv1_1_input = next(op for op in ops if op["op_name"] == "CONV_2D")["inputs"][0]
    step = tensors[conv1_1_input]["quantization"][0]
    np.testing.assert_allclose(value(conv1_1_input), want, atol=step / 2 + 1e-4)
    return ops, value


def test_tflite_int8_computes_the_preprocessing_and_the_l2_norm(exported):
    """conv1_1 reads RGB minus the mean in RGB order (the export folds the flip into its kernel); the
    L2 norm's output is x / ||x|| of its input (int8, its step was 1/128 for values of ~0.04)."""
    _, out, _ = exported
    image = images_at(300, 1)  # the model's input size: the resize in front is the identity
    mean_rgb = np.array(ModelConfig("vgg300", SYNTHETIC_CLASSES).mean_bgr[::-1])
    ops, value = assert_conv1_1_input(out / "model_int8.tflite", image, image - mean_rgb)
    l2 = next(op for op in ops if op["op_name"] == "L2_NORMALIZATION")
    x = value(l2["inputs"][0])
    np.testing.assert_allclose(value(l2["outputs"][0]), x / np.sqrt((x**2).sum(-1, keepdims=True) + 1e-10),
                               atol=1e-6)


def test_tflite_int8_of_a_model_that_flips_channels_reverses_them_in_float(tmp_path):
    """Without the fold, quantized REVERSE_V2 copied int8 bytes under another scale than its input's:
    conv1_1 read about 1.5 * (pixel - 83) minus the mean. Kept float, it reads BGR minus the mean."""
    from ssd.deploy.tflite_export import write_tflite

    tf.keras.utils.set_random_seed(0)
    config = ModelConfig("vgg300", SYNTHETIC_CLASSES, width=0.125)
    images = images_at(300, 3)
    path = write_tflite(Detector(build_model_from_config(config), config), tmp_path / "m.tflite", images[:2])
    assert "REVERSE_V2" in float_ops(*tflite_ops(path)).values()
    assert_conv1_1_input(path, images[2:], images[2:, :, :, ::-1] - np.array(config.mean_bgr))


def test_tflite_int8_refuses_an_empty_calibration_set(tmp_path):
    from ssd.deploy.tflite_export import write_tflite

    config = ModelConfig("vgg300", SYNTHETIC_CLASSES, width=0.125)
    with pytest.raises(ValueError, match="INT8 calibration needs at least one image, got none"):
        write_tflite(Detector(build_model_from_config(config), config), tmp_path / "m.tflite", [])
    assert not (tmp_path / "m.tflite").exists()


def test_load_detector_picks_the_runtime_from_the_path(exported, tmp_path):
    _, out, _ = exported
    images = images_at(300, 2)
    want = frozen_graph(out, images)
    for path in (out, out / "model.onnx", out / "model.xml", out / "model.tflite"):
        try:
            assert_same_detections(load_detector(path)(images), want)
        except AssertionError as err:
            raise AssertionError(f"{path.name}: {err}") from None
    assert model_format(out / "model.xml") == "openvino"
    with pytest.raises(ValueError, match=r"model .*weights.h5: cannot tell its format"):
        load_detector(tmp_path / "weights.h5")
    with pytest.raises(FileNotFoundError, match="missing.onnx does not exist"):
        load_detector(tmp_path / "missing.onnx")
    with pytest.raises(ValueError, match="images must be uint8"):
        load_detector(out / "model.onnx")(images.astype(np.float32))


@pytest.mark.parametrize("num_classes, max_detections", [(3, 50), (1, 20)])
def test_onnx_postprocess_equals_tensorflow_postprocess(num_classes, max_detections):
    """The ONNX post-processing alone against `ssd.core.postprocess`, on decoded boxes with distinct scores."""
    import onnxruntime as ort

    rng = np.random.default_rng(num_classes)
    anchors, batch, top_k = 40, 2, 16  # 1 class x top-16 < 20 detections: the padded case
    centers = rng.uniform(0.1, 0.9, (batch, anchors, 2))
    sizes = rng.uniform(0.05, 0.4, (batch, anchors, 2))
    boxes_xyxy = np.concatenate([centers - sizes / 2, centers + sizes / 2], -1).astype(np.float32)
    logits = rng.normal(0, 2, (batch, anchors, num_classes + 1)).astype(np.float32)
    scores = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    options = PostprocessOptions(score_threshold=0.05, iou_threshold=0.45, top_k_per_class=top_k,
                                 max_detections=max_detections)
    session = ort.InferenceSession(postprocess_model(anchors, num_classes, options).SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    got = dict(zip(OUTPUTS, session.run(list(OUTPUTS), {"raw_boxes": boxes_xyxy[..., [1, 0, 3, 2]],
                                                        "raw_class_scores": scores})))
    # postprocess decodes offsets: zero offsets from anchors equal to the boxes give the boxes back.
    for b in range(batch):
        want = postprocess(np.zeros((1, anchors, 4), np.float32), np.log(scores[b : b + 1]),
                           Anchors(np.concatenate([centers[b], sizes[b]], -1), (0.1, 0.1, 0.2, 0.2)), options)
        n = int(want["num_detections"][0])
        assert got["num_detections"][b] == n > 0
        np.testing.assert_allclose(got["detection_scores"][b], want["detection_scores"][0].numpy(), atol=1e-6)
        np.testing.assert_array_equal(got["detection_classes"][b], want["detection_classes"][0].numpy())
        np.testing.assert_allclose(got["detection_boxes"][b], want["detection_boxes"][0].numpy(), atol=1e-6)


def test_cli_refuses_int8_without_an_int8_format_and_unknown_formats(tmp_path, capsys):
    assert export_graph.main(["--run-dir", str(tmp_path), "--out", str(tmp_path / "o"), "--format", "onnx",
                              "--int8"]) == 2
    assert "--int8 needs openvino or tflite" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        export_graph.main(["--run-dir", str(tmp_path), "--out", str(tmp_path / "o"), "--format", "onnx,trt"])
    assert "expected a comma-separated list of frozen, saved_model, onnx, openvino, tflite" in capsys.readouterr().err


def test_detect_cli_runs_any_format_on_video_and_images(exported, tmp_path):
    import detect
    from ssd_datasets.synthetic_video import write_synthetic_video

    data, out, _ = exported
    video = tmp_path / "clip.mp4"
    write_synthetic_video(video, num_frames=5, fps=10.0, width=160, height=120)
    images = sorted((data / "JPEGImages").glob("*.jpg"))[:2]
    for model in ("model_int8.tflite", "model.onnx"):
        dest = tmp_path / model
        assert detect.main(["--model", str(out / model), str(video), *map(str, images), "--out", str(dest),
                            "--threshold", "0.0", "--batch-size", "2", "--quiet"]) == 0
        lines = [json.loads(line) for line in (dest / "clip.jsonl").read_text().splitlines()]
        assert [line["frame"] for line in lines] == list(range(5))
        assert {d["class_name"] for line in lines for d in line["detections"]} <= set(SYNTHETIC_CLASSES)
        assert len((dest / "detections.jsonl").read_text().splitlines()) == 2


def test_evaluate_and_serve_take_any_format(exported, tmp_path):
    import cv2

    from ssd.deploy.runtimes import load_model
    from ssd.deploy.client import post_image
    from ssd.deploy.server import make_server
    from tools import evaluate

    data, out, _ = exported
    assert evaluate.main(["--model", str(out / "model.xml"), "--precision", "f32", "--data-root", str(data),
                          "--split", "val", "--json", str(tmp_path / "m.json"), "--no-progress"]) == 0
    assert json.loads((tmp_path / "m.json").read_text())["num_images"] == 1
    detector, names, _ = load_model(out / "model.onnx")
    assert names == SYNTHETIC_CLASSES
    server = make_server(detector, names, port=0, threshold=0.0)
    thread = __import__("threading").Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        ok, jpeg = cv2.imencode(".jpg", images_at(120, 1)[0])
        reply = post_image(server.url, jpeg.tobytes())
    finally:
        server.shutdown()
        server.server_close()
    assert reply["width"] == 120 and len(reply["detections"]) > 0


def test_openvino_and_nncf_telemetry_is_declined(tmp_path):
    """Without a consent file both would send usage data; a fresh interpreter shows they do not."""
    import subprocess
    import sys

    code = (
        "from openvino_telemetry.utils.opt_in_checker import OptInChecker\n"
        "print(OptInChecker().check(False).name)\n"
        "from ssd.deploy.runtimes import decline_openvino_telemetry\n"
        "decline_openvino_telemetry()\n"
        "print(OptInChecker().check(False).name)\n"
        "from nncf.telemetry.wrapper import telemetry\n"
        "print(telemetry._impl.consent)\n"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("CI", "TF_BUILD", "JENKINS_URL")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={**env, "HOME": str(tmp_path)})
    assert result.stdout.split() == ["NO_FILE", "DECLINED", "False"], result.stderr[-2000:]


def test_calibration_draw_is_seeded_without_repeats_and_refuses_bad_counts():
    from ssd.deploy.quantization import draw_calibration
    from ssd.records import DetectionDataset, Sample

    dataset = DetectionDataset(("a",), tuple(Sample(f"{i:03d}", f"{i}.jpg", 10, 10) for i in range(20)))
    drawn = [s.image_id for s in draw_calibration(dataset, 8, seed=3)]
    assert drawn == sorted(set(drawn)) and len(drawn) == 8  # distinct, in dataset order
    assert drawn == [s.image_id for s in draw_calibration(dataset, 8, seed=3)]
    assert drawn != [s.image_id for s in draw_calibration(dataset, 8, seed=4)]
    assert len(draw_calibration(dataset, 50)) == 20  # a smaller split gives all its images
    with pytest.raises(ValueError, match="calibration images must be >= 1, got 0"):
        draw_calibration(dataset, 0)
    with pytest.raises(ValueError, match="calibration split has no images"):
        draw_calibration(DetectionDataset(("a",), ()), 4)
