"""The exported detector as OpenVINO IR (model.xml + model.bin), fp32 weights, and its NNCF INT8 twin.

The IR is converted from the ONNX export (`ssd.deploy.onnx_export`), not from the frozen graph:
OpenVINO's TensorFlow front end has no conversion rule for CombinedNonMaxSuppression, while the
ONNX file expresses the same post-processing in standard ops (NonMaxSuppression, TopK, ...).
Weights stay fp32 in the file (`compress_to_fp16=False`); the precision is chosen when the model
is compiled (`ssd.deploy.runtimes`: f32 or bf16 inference precision hint).

INT8: NNCF post-training quantization of the network's convolutions (mixed preset), calibrated on
uint8 images (any size; the graph resizes), with activation ranges from the calibration images'
global min and max. The L2 normalisation (`FLOAT_OP_TYPES`) and the post-processing subgraph stay
float: NNCF leaves NonMaxSuppression and the index arithmetic alone.

INT8 with an accuracy bound (`write_accuracy_controlled_ir`): NNCF's accuracy control starts from
the same INT8 model and puts operations back to float, scored by the project's evaluator on the
run's validation split, until the drop from the fp32 IR is within the bound.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ssd.deploy.runtimes import decline_openvino_telemetry, openvino_detector
from ssd.detections import DetectFn

# Kept float in the INT8 model: conv4_3's L2 normalisation (ReduceSum, Sqrt, Divide, and the
# Multiply by its learned scale). Quantized, it cost a trained width-0.25 model 24.5 of its 29.8
# VOC07 mAP points; kept float, 0.3 points, at the same speed (the convolutions stay INT8).
FLOAT_OP_TYPES = ("ReduceSum", "Sqrt", "Divide", "Multiply")
QUANTIZABLE_OP_TYPES = ("Convolution", "GroupConvolution", "MatMul")  # what INT8 runs in int8


def write_ir(onnx_path: str | Path, path: str | Path) -> Path:
    """Convert the ONNX detector at `onnx_path` to IR at `path` (.xml, .bin beside it), fp32 weights."""
    decline_openvino_telemetry()
    import openvino as ov

    path = Path(path)
    ov.save_model(ov.convert_model(str(onnx_path)), str(path), compress_to_fp16=False)
    return path


def write_int8_ir(ir_path: str | Path, path: str | Path, calibration: Sequence[np.ndarray]) -> Path:
    """Quantize the IR at `ir_path` with NNCF on `calibration` (uint8 RGB [H, W, 3] each) -> `path`."""
    decline_openvino_telemetry()  # before NNCF's import, which starts its telemetry
    import nncf
    import openvino as ov

    model = ov.Core().read_model(str(ir_path))
    settings = _quantization_settings(calibration)
    quantized = nncf.quantize(model, _calibration_dataset(calibration), advanced_parameters=settings.pop("advanced"),
                              **settings)
    return _save(quantized, path)


def write_accuracy_controlled_ir(ir_path: str | Path, path: str | Path, calibration: Sequence[np.ndarray],
                                 validation: Sequence[Any], score: Callable[[DetectFn, Iterable[Any]], float],
                                 max_drop: float) -> Path:
    """INT8 as `write_int8_ir`, then NNCF's accuracy control: operations go back to float, the most
    harmful first (ranked on the validation items whose score dropped most), until `score` on
    `validation` is within `max_drop` of the fp32 IR's, or none is left to revert.

    `score(detector, items)` is the project's evaluator on some of the validation items
    (`ValidationSet.score`); NNCF calls it on each compiled candidate, and per item to pick the
    items it ranks operations on.
    """
    decline_openvino_telemetry()
    import nncf
    import openvino as ov
    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

    model = ov.Core().read_model(str(ir_path))
    settings = _quantization_settings(calibration)
    quantized = nncf.quantize_with_accuracy_control(
        model, _calibration_dataset(calibration), nncf.Dataset(list(validation)),
        lambda compiled, items: score(openvino_detector(compiled), items),
        max_drop=max_drop, drop_type=nncf.DropType.ABSOLUTE, advanced_quantization_parameters=settings.pop("advanced"),
        # Rank on at most 100 items: a ranking pass compiles and scores one candidate per group of operations.
        advanced_accuracy_restorer_parameters=AdvancedAccuracyRestorerParameters(
            ranking_subset_size=min(len(validation), 100), num_ranking_workers=1),
        **settings)
    return _save(quantized, path)


def float_operations(path: str | Path) -> set[str]:
    """Names of the IR's convolutions and matrix products that run in float: their weights are a float
    constant (an INT8 operation's weights are int8, decompressed by a Convert/Multiply chain)."""
    decline_openvino_telemetry()
    import openvino as ov

    return {op.get_friendly_name() for op in ov.Core().read_model(str(path)).get_ops()
            if op.get_type_name() in QUANTIZABLE_OP_TYPES
            and op.input_value(1).get_node().get_type_name() == "Constant"
            and op.input_value(1).get_element_type().is_real()}


def _calibration_dataset(calibration: Sequence[np.ndarray]):
    import nncf

    if not calibration:
        raise ValueError("INT8 calibration needs at least one image, got none")
    return nncf.Dataset([np.asarray(image, np.uint8)[None] for image in calibration])


def _quantization_settings(calibration: Sequence[np.ndarray]) -> dict:
    """The NNCF arguments both INT8 flows share (the advanced parameters under "advanced")."""
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    # Activation ranges from the global min/max over the calibration images: NNCF's default averages
    # per-image minima and maxima, which clips the rarer large activations. On three trained models
    # the default lost 0.79, 0.62 and 0.28 VOC07 mAP points, the global range 0.27, -0.10 and 0.24.
    ranges = AdvancedQuantizationParameters(activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX)
    return {"subset_size": max(1, len(calibration)), "preset": nncf.QuantizationPreset.MIXED,
            "ignored_scope": nncf.IgnoredScope(types=list(FLOAT_OP_TYPES), validate=False), "advanced": ranges}


def _save(model, path: str | Path) -> Path:
    import openvino as ov

    path = Path(path)
    ov.save_model(model, str(path), compress_to_fp16=False)
    return path
