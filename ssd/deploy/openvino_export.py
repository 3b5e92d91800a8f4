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
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ssd.deploy.runtimes import decline_openvino_telemetry

IR_FILE, IR_INT8_FILE = "model.xml", "model_int8.xml"
# Kept float in the INT8 model: conv4_3's L2 normalisation (ReduceSum, Sqrt, Divide, and the
# Multiply by its learned scale). Quantized, it cost a trained width-0.25 model 24.5 of its 29.8
# VOC07 mAP points; kept float, 0.3 points, at the same speed (the convolutions stay INT8).
FLOAT_OP_TYPES = ("ReduceSum", "Sqrt", "Divide", "Multiply")


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
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    if not calibration:
        raise ValueError("INT8 calibration needs at least one image, got none")
    model = ov.Core().read_model(str(ir_path))
    dataset = nncf.Dataset([np.asarray(image, np.uint8)[None] for image in calibration])
    # Activation ranges from the global min/max over the calibration images: NNCF's default averages
    # per-image minima and maxima, which clips the rarer large activations. On three trained models
    # the default lost 0.79, 0.62 and 0.28 VOC07 mAP points, the global range 0.27, -0.10 and 0.24.
    ranges = AdvancedQuantizationParameters(activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX)
    quantized = nncf.quantize(model, dataset, subset_size=len(calibration), preset=nncf.QuantizationPreset.MIXED,
                              ignored_scope=nncf.IgnoredScope(types=list(FLOAT_OP_TYPES), validate=False),
                              advanced_parameters=ranges)
    path = Path(path)
    ov.save_model(quantized, str(path), compress_to_fp16=False)
    return path
