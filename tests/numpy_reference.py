"""NumPy references the tests compare TensorFlow layers against (no TensorFlow here)."""

from __future__ import annotations

import numpy as np


def numpy_conv(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, stride: int = 1, pad: int = 0,
               dilation: int = 1) -> np.ndarray:
    """Caffe's convolution, in float64.

    Args:
        x: [H, W, C_in], zero-padded by `pad` pixels on every side.
        weight: Caffe/torch layout (C_out, C_in, kh, kw).
        bias: [C_out].
    Returns:
        [H_out, W_out, C_out] with H_out = (H + 2 pad - dilation (kh - 1) - 1) // stride + 1.
    """
    x = np.pad(np.asarray(x, np.float64), ((pad, pad), (pad, pad), (0, 0)))
    kh, kw = weight.shape[2:]
    span_h, span_w = dilation * (kh - 1) + 1, dilation * (kw - 1) + 1
    windows = np.lib.stride_tricks.sliding_window_view(x, (span_h, span_w), axis=(0, 1))
    windows = windows[::stride, ::stride, :, ::dilation, ::dilation]  # [H_out, W_out, C_in, kh, kw]
    return np.einsum("yxcij,ocij->yxo", windows, np.asarray(weight, np.float64)) + bias
