"""ImageNet VGG-16 weights from the Keras Applications HDF5 file into an SSD model's base.

The source is `vgg16_weights_tf_dim_ordering_tf_kernels.h5` (with the fully connected top),
in the legacy Keras weights layout: root attribute `layer_names`; one group per layer whose
attribute `weight_names` lists its datasets, e.g. `block1_conv1_W_1:0`, `block1_conv1_b_1:0`
(Keras 1 names, as published) or `block1_conv1/kernel:0`, `block1_conv1/bias:0` (Keras 2).
Kernels are channels-last, (kh, kw, in, out); the model was trained on Caffe-preprocessed BGR
input, which is what `ssd.modeling.model.CaffePreprocess` produces.

conv1_1 ... conv5_3 are copied; conv6 and conv7 get the decimated fully connected layers
(see `decimate_fc6` and `decimate_fc7`). Nothing is ever downloaded here.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import keras
import numpy as np

EXPECTED_FILE = "vgg16_weights_tf_dim_ordering_tf_kernels.h5"
_URL = ("https://storage.googleapis.com/tensorflow/keras-applications/vgg16/"
        "vgg16_weights_tf_dim_ordering_tf_kernels.h5")

# File layer -> SSD layer, for the convolutions copied unchanged.
CONV_LAYERS: dict[str, str] = {
    f"block{b}_conv{i}": f"conv{b}_{i}"
    for b, repeats in enumerate((2, 2, 3, 3, 3), start=1)
    for i in range(1, repeats + 1)
}
_VGG_CHANNELS = (3, 64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)
# Kernel shapes in the file, by file layer name.
FILE_SHAPES: dict[str, tuple[int, ...]] = {
    **{name: (3, 3, _VGG_CHANNELS[k], _VGG_CHANNELS[k + 1]) for k, name in enumerate(CONV_LAYERS)},
    "fc1": (7 * 7 * 512, 4096),
    "fc2": (4096, 4096),
}


def weights_help(path: str | Path, problem: str) -> str:
    """One paragraph: what is wrong with `path`, which file is expected and how to get it."""
    return (
        f"VGG-16 weights file {str(path)!r}: {problem}. Expected the Keras Applications VGG-16 "
        f"ImageNet weights WITH the fully connected top, {EXPECTED_FILE!r} (HDF5, about 528 MB; "
        f"the '_notop' file lacks fc1/fc2, which initialise conv6/conv7). This library downloads "
        f"nothing: on a machine with internet run `python -c \"import keras; "
        f"keras.applications.VGG16(weights='imagenet')\"` (the file lands in ~/.keras/models/) "
        f"or download {_URL}, then pass the file's path."
    )


def _attribute_list(group: h5py.Group, name: str) -> list[str]:
    """A list-of-strings attribute; Keras splits long ones into `name0`, `name1`, ..."""
    if name in group.attrs:
        values = list(group.attrs[name])
    else:
        values, chunk = [], 0
        while f"{name}{chunk}" in group.attrs:
            values.extend(group.attrs[f"{name}{chunk}"])
            chunk += 1
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in values]


def read_layer_weights(root: h5py.Group, layer: str) -> list[h5py.Dataset]:
    """The datasets of one layer of a legacy Keras weights file, in `weight_names` order.

    Args:
        root: the open file (or its `model_weights` group for a whole-model save).
        layer: layer name, e.g. "block1_conv1".
    Returns:
        [kernel, bias] as lazy h5py datasets; [] if the layer is absent or has no weights.
    """
    if "model_weights" in root and "layer_names" not in root.attrs:
        root = root["model_weights"]
    if layer not in root:
        return []
    group = root[layer]
    # Keras 1 names are direct children ("block1_conv1_W_1:0"), Keras 2 names are paths
    # ("block1_conv1/kernel:0") relative to the layer group; h5py resolves both.
    return [group[name] for name in _attribute_list(group, "weight_names") if name in group]


def decimate_fc6(kernel, bias) -> tuple[np.ndarray, np.ndarray]:
    """fc6 of VGG-16 as SSD's conv6: (25088, 4096) -> (3, 3, 512, 1024), bias (4096,) -> (1024,).

    The rows of `kernel` are a channels-last flatten of the 7x7x512 pool5 map, so the kernel is
    (7, 7, 512, 4096); keep rows/columns 0, 3, 6 and every 4th output: [::3, ::3, :, ::4].
    Only those 9 blocks of 512 rows are read, so `kernel` may be a lazy h5py dataset.
    """
    blocks = [[np.asarray(kernel[(h * 7 + w) * 512:(h * 7 + w + 1) * 512, ::4]) for w in (0, 3, 6)]
              for h in (0, 3, 6)]
    return np.asarray(blocks), np.asarray(bias[::4])


def decimate_fc7(kernel, bias) -> tuple[np.ndarray, np.ndarray]:
    """fc7 of VGG-16 as SSD's conv7: (4096, 4096) -> (1, 1, 1024, 1024), bias (4096,) -> (1024,)."""
    return np.asarray(kernel[::4, ::4])[None, None], np.asarray(bias[::4])


def _check_model(model: keras.Model) -> None:
    """The model must be a width-1.0 SSD: its base has VGG-16's exact shapes."""
    expected = {ssd: FILE_SHAPES[vgg] for vgg, ssd in CONV_LAYERS.items()}
    expected.update(conv6=(3, 3, 512, 1024), conv7=(1, 1, 1024, 1024))
    names = {layer.name for layer in model.layers}
    for name, shape in expected.items():
        if name not in names:
            raise ValueError(f"load_vgg16_weights: model {model.name!r} has no layer {name!r}; "
                             f"expected an SSD model from ssd.modeling.model.build_model")
        actual = tuple(model.get_layer(name).kernel.shape)
        if actual != shape:
            raise ValueError(
                f"load_vgg16_weights: ImageNet VGG-16 weights fit only a width-1.0 model; layer "
                f"{name!r} of model {model.name!r} has kernel shape {actual}, VGG-16 needs {shape}"
            )


def _open(path: Path) -> h5py.File:
    if not path.is_file():
        raise FileNotFoundError(weights_help(path, "no such file"))
    if not h5py.is_hdf5(path):
        raise ValueError(weights_help(path, "not an HDF5 file"))
    try:
        return h5py.File(path, "r")
    except OSError as error:
        raise ValueError(weights_help(path, f"h5py cannot open it ({error})")) from error


def _file_weights(f: h5py.File, path: Path) -> dict[str, list[h5py.Dataset]]:
    """[kernel, bias] of every layer we need, shapes checked; errors say what is missing."""
    found = {name: read_layer_weights(f, name) for name in FILE_SHAPES}
    missing = [name for name, weights in found.items() if len(weights) != 2]
    if missing:
        hint = " (this looks like the no-top file)" if set(missing) == {"fc1", "fc2"} else ""
        raise ValueError(weights_help(path, f"layers {missing} are missing{hint}"))
    for name, (kernel, bias) in found.items():
        shape = FILE_SHAPES[name]
        if tuple(kernel.shape) != shape or tuple(bias.shape) != shape[-1:]:
            raise ValueError(weights_help(
                path, f"layer {name!r} has kernel {tuple(kernel.shape)} and bias "
                      f"{tuple(bias.shape)}, expected {shape} and {shape[-1:]}"))
    return found


def load_vgg16_weights(model: keras.Model, path: str | Path) -> dict[str, str]:
    """Initialise conv1_1 ... conv7 of a width-1.0 SSD model from the Keras VGG-16 ImageNet file.

    Args:
        model: from `ssd.modeling.model.build_model(..., width=1.0)`; modified in place.
        path: the file `vgg16_weights_tf_dim_ordering_tf_kernels.h5` (with top).
    Returns:
        SSD layer name -> where its weights came from, e.g. {"conv1_1": "block1_conv1", ...,
        "conv6": "fc1[::3, ::3, :, ::4]"}.
    """
    _check_model(model)
    path = Path(path)
    report = {}
    with _open(path) as f:
        weights = _file_weights(f, path)
        for vgg, ssd in CONV_LAYERS.items():
            kernel, bias = weights[vgg]
            model.get_layer(ssd).set_weights([np.asarray(kernel), np.asarray(bias)])
            report[ssd] = vgg
        model.get_layer("conv6").set_weights(list(decimate_fc6(*weights["fc1"])))
        report["conv6"] = "fc1[::3, ::3, :, ::4] of (7, 7, 512, 4096), bias[::4]"
        model.get_layer("conv7").set_weights(list(decimate_fc7(*weights["fc2"])))
        report["conv7"] = "fc2[::4, ::4], bias[::4]"
    return report
