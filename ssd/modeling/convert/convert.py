"""Published SSD weights -> a run directory; published ImageNet bases -> an SSD model's base.

Sources, by file suffix:
    .caffemodel  the Caffe release: VGG_VOC0712_SSD_300x300_iter_120000.caffemodel, the 512 one,
                 or the ImageNet base VGG_ILSVRC_16_layers_fc_reduced.caffemodel
    .pth / .pt   ssd.pytorch: ssd300_mAP_77.43_v2.pth, or the base vgg16_reducedfc.pth
    .h5 / .hdf5  a trained SSD: ssd_keras's converted Caffe weights (Caffe's names, Keras layouts,
                 the same BGR input); a base: the Keras VGG-16 ImageNet file (`ssd.modeling.vgg16_weights`)

A trained detector's preset and class count come from the file (vgg512 has a conv10_2 /
`extras.8`; classes = the first class head's channels / its 4 boxes per location).

ssd.pytorch trained its detector on RGB images (its VOC loader swaps OpenCV's BGR to RGB after
subtracting the BGR mean (104, 117, 123)), while this library feeds BGR like Caffe: conv1_1's input
channels are reversed on conversion so the converted model computes the same function. Its
ImageNet base was converted from Caffe and is BGR: it is copied as is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import keras
import numpy as np
import tensorflow as tf

from ssd.config import (
    CAFFE_SUFFIXES,
    DEFAULT_BOXES,
    KERAS_SUFFIXES,
    SSD_MEAN_BGR,
    TORCH_SUFFIXES,
    ModelConfig,
)
from ssd.modeling.convert.caffe import read_caffemodel
from ssd.modeling.convert.mapping import (
    BASE_LAYERS,
    IGNORED_BASE_LAYERS,
    NORM,
    assign,
    caffe_name,
    detector_layers,
    to_keras,
    torch_name,
    torch_tensors,
)
from ssd.modeling.convert.torch_pickle import MAX_TENSOR_BYTES, read_state_dict
from ssd.modeling.model import build_model_from_config
from ssd.modeling.run_dir import BEST, save_run_config
from ssd.modeling.vgg16_weights import load_vgg16_weights, read_layer_weights


@dataclass(frozen=True)
class SourceWeights:
    """A weights file read and renamed: our layer -> arrays in Keras layout."""

    path: Path
    preset: str | None  # None: an ImageNet base (conv1_1 ... conv7 only)
    tensors: dict[str, list[np.ndarray]]
    names: dict[str, str]  # our layer -> its name in the file
    unused: tuple[str, ...]  # tensors in the file that no layer takes

    @property
    def num_classes(self) -> int:
        """Outputs per box of a detector's class heads, background included."""
        head = f"{NORM}_mbox_conf"
        if head not in self.tensors:
            raise ValueError(f"{self.path}: missing {self.names[head]} (the first class head), which "
                             f"tells the number of classes")
        boxes = DEFAULT_BOXES[self.preset].boxes_per_location[0]
        shapes = [a.shape for a in self.tensors[head]]
        if len(shapes) != 2 or len(shapes[1]) != 1 or shapes[1][0] < 2 * boxes or shapes[1][0] % boxes:
            raise ValueError(f"{self.path}: {self.names[head]} (the first class head) has arrays of shapes {shapes}; "
                             f"expected a kernel and a bias of {boxes} boxes x (background + at least 1 class)")
        return shapes[1][0] // boxes


def _layer_arrays(layer: str, arrays: list[np.ndarray]) -> list[np.ndarray]:
    return [a.reshape(-1) for a in arrays] if layer == NORM else to_keras(arrays)


def read_caffe(path: Path) -> SourceWeights:
    layers = read_caffemodel(path)
    preset = None
    if any(name.endswith("_mbox_conf") for name in layers):
        preset = "vgg512" if "conv10_2" in layers else "vgg300"
    names = {ours: caffe_name(ours) for ours in (detector_layers(preset) if preset else BASE_LAYERS)}
    tensors = {ours: _layer_arrays(ours, layers[name]) for ours, name in names.items() if name in layers}
    unused = tuple(n for n in layers if n not in names.values() and n not in IGNORED_BASE_LAYERS)
    return SourceWeights(path, preset, tensors, names, unused)


def read_torch(path: Path) -> SourceWeights:
    return torch_source(read_state_dict(path), path)


def torch_source(state: dict[str, np.ndarray], path: Path) -> SourceWeights:
    """An ssd.pytorch state dict (detector or `vgg` base) renamed to our layers."""
    preset = ("vgg512" if "extras.8.weight" in state else "vgg300") if "conf.0.weight" in state else None
    prefix = "vgg." if any(k.startswith("vgg.") for k in state) else ""
    modules = {ours: torch_name(ours, preset or "vgg300", prefix)
               for ours in (detector_layers(preset) if preset else BASE_LAYERS)}
    tensors = {ours: _layer_arrays(ours, arrays) for ours, module in modules.items()
               if (arrays := torch_tensors(state, module)) is not None}
    if preset and "conv1_1" in tensors:  # trained on RGB: see the module docstring
        tensors["conv1_1"][0] = np.ascontiguousarray(tensors["conv1_1"][0][:, :, ::-1, :])
    used = {f"{m}.{p}" for m in modules.values() for p in ("weight", "bias")}
    unused = tuple(k for k in state if k not in used)
    return SourceWeights(path, preset, tensors, {o: f"{m}.weight" for o, m in modules.items()}, unused)


def read_ssd_keras(path: Path) -> SourceWeights:
    """ssd_keras's converted Caffe SSD (.h5): Caffe's layer names, Keras layouts, the same BGR input."""
    if not path.is_file():
        raise FileNotFoundError(f"Keras weights file {path}: no such file")
    if not h5py.is_hdf5(path):
        raise ValueError(f"Keras weights file {path}: not an HDF5 file")
    try:
        with h5py.File(path, "r") as f:
            root = f["model_weights"] if "model_weights" in f and "layer_names" not in f.attrs else f
            layers = _numeric_arrays({name: read_layer_weights(f, name) for name in root}, path)
    except OSError as error:  # h5py: a damaged file, or data that cannot be read
        raise ValueError(f"Keras weights file {path}: h5py cannot read it ({error})") from None
    if f"{NORM}_mbox_conf" not in layers:
        raise ValueError(f"Keras weights file {path}: no layer {NORM}_mbox_conf; expected ssd_keras's SSD300 / "
                         f"SSD512 weights (for the Keras VGG-16 ImageNet file use train_detector.py --base-weights)")
    preset = "vgg512" if "conv10_2" in layers else "vgg300"
    names = {ours: caffe_name(ours) for ours in detector_layers(preset)}
    tensors = {ours: [a.reshape(-1) for a in layers[name]] if ours == NORM else layers[name]
               for ours, name in names.items() if name in layers}
    unused = tuple(n for n in layers if n not in names.values())
    return SourceWeights(path, preset, tensors, names, unused)


def _numeric_arrays(layers: dict[str, list[h5py.Dataset]], path: Path) -> dict[str, list[np.ndarray]]:
    """The layers' datasets read, once each is known to be numbers and all fit MAX_TENSOR_BYTES."""
    total = 0
    for name, datasets in layers.items():
        for dataset in datasets:
            if not isinstance(dataset, h5py.Dataset) or dataset.dtype.kind not in "fiu":
                kind = dataset.dtype if isinstance(dataset, h5py.Dataset) else type(dataset).__name__
                raise ValueError(f"Keras weights file {path}: layer {name}'s weight {dataset.name} is {kind}, "
                                 f"not numbers")
            total += dataset.size * dataset.dtype.itemsize
    if total > MAX_TENSOR_BYTES:
        raise ValueError(f"Keras weights file {path}: its layers declare {total:,} bytes, more than the "
                         f"{MAX_TENSOR_BYTES:,} of any SSD this reader converts")
    return {name: [np.asarray(d) for d in datasets] for name, datasets in layers.items() if datasets}


def read_weights(path: str | Path) -> SourceWeights:
    """A trained SSD (Caffe, ssd.pytorch, ssd_keras) or a VGG-16 base (Caffe, ssd.pytorch), by suffix."""
    path = Path(path).expanduser()
    suffix = path.suffix.lower()
    if suffix in CAFFE_SUFFIXES:
        return read_caffe(path)
    if suffix in TORCH_SUFFIXES:
        return read_torch(path)
    if suffix in KERAS_SUFFIXES:
        return read_ssd_keras(path)
    raise ValueError(f"weights file {path}: expected a Caffe {CAFFE_SUFFIXES}, PyTorch {TORCH_SUFFIXES} or "
                     f"ssd_keras {KERAS_SUFFIXES} file, got suffix {suffix!r}")


def _refuse_unused(source: SourceWeights) -> None:
    if source.unused:
        kind = f"{source.preset} SSD" if source.preset else "VGG-16 base"
        raise ValueError(f"{source.path}: tensors {list(source.unused)} map to no layer of a {kind} "
                         f"(a different network?)")


def _lines(mapped: list[tuple[str, str, tuple[int, ...]]]) -> list[str]:
    """One "ours <- name in the file (kernel shape)" line per layer."""
    return [f"{ours:<22} <- {name} {shape}" for ours, name, shape in mapped]


def convert_to_run_dir(path: str | Path, run_dir: str | Path, class_names: Sequence[str],
                       boxes: str = "voc") -> list[str]:
    """Write a trained Caffe / ssd.pytorch SSD as a run directory (config.json, best/ checkpoint).

    Args:
        path: the weights file.
        run_dir: a new directory; `ssd.modeling.run_dir.load_trained_model` reads it.
        class_names: the model's classes in its output order, background excluded (the 20 VOC
            classes for the VOC models).
        boxes: the default-box set the model was trained with, "voc" or "coco" (`ssd.config.BOX_SETS`).
    Returns:
        One "our layer <- name in the file (Keras kernel shape)" line per layer set.
    """
    source = read_weights(path)
    if source.preset is None:
        raise ValueError(f"{source.path} is an ImageNet VGG-16 base, not a trained SSD: pass it to "
                         f"train_detector.py --base-weights instead")
    _refuse_unused(source)
    run_dir = Path(run_dir)
    if (run_dir / "config.json").exists():
        raise ValueError(f"run directory {run_dir} already holds a run (config.json): choose a new one")
    if len(class_names) + 1 != source.num_classes:
        raise ValueError(f"{source.path} has {source.num_classes} outputs per box (background + "
                         f"{source.num_classes - 1} classes); {len(class_names)} class names were given")
    config = ModelConfig(source.preset, tuple(class_names), boxes=boxes, mean_bgr=SSD_MEAN_BGR)
    model = build_model_from_config(config)
    mapped = assign(model, source.tensors, source.names, detector_layers(source.preset), str(source.path))
    save_run_config(run_dir, config, {})
    tf.train.CheckpointManager(tf.train.Checkpoint(model=model), str(run_dir / BEST), max_to_keep=1).save()
    return _lines(mapped)


def load_base_weights(model: keras.Model, path: str | Path) -> list[str]:
    """Initialise conv1_1 ... conv7 of a width-1.0 SSD from an ImageNet base (or a trained SSD's base).

    Accepts the Keras VGG-16 file (.h5, fc6/fc7 decimated), the fc-reduced Caffe base
    (.caffemodel) and ssd.pytorch's vgg16_reducedfc.pth. Returns one "ours <- source" line per layer.
    """
    path = Path(path).expanduser()
    if path.suffix.lower() in KERAS_SUFFIXES:
        return [f"{ours} <- {source}" for ours, source in load_vgg16_weights(model, path).items()]
    source = read_weights(path)
    if source.preset is None:
        _refuse_unused(source)
    return _lines(assign(model, source.tensors, source.names, BASE_LAYERS, str(source.path)))
