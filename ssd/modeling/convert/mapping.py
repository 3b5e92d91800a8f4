"""Which source tensor becomes which layer of this library's SSD, and in which layout.

Layer names here follow the Caffe release except for one shift: Caffe keeps the names fc6 and fc7
and numbers the extra layers from conv6, this library calls fc6/fc7 conv6/conv7 and numbers the
extra layers from conv8. So Caffe conv{n}_{i} (n >= 6) is our conv{n+2}_{i}, and Caffe's head
`fc7_mbox_conf` is our `conv7_mbox_conf`. ssd.pytorch names modules by position: `vgg.N`
(N = the index in its nn.ModuleList, ReLUs and pools included), `extras.N`, `loc.N`, `conf.N`
(one per source map, in default-box order) and `L2Norm.weight`; its ImageNet base
`vgg16_reducedfc.pth` is the state dict of the `vgg` list alone (keys `N.weight`).

Both sources store a convolution as weight (out, in, kh, kw) and bias (out,); Keras wants
(kh, kw, in, out). The class heads need no reordering: Caffe and ssd.pytorch permute a head's
(k * C, H, W) output to (H, W, k * C) and read it as (H * W * k, C), channel = box * C + class,
which is this library's order (`ssd.modeling.model._heads`).
"""

from __future__ import annotations

import re

import keras
import numpy as np

from ssd.modeling.model import SOURCE_LAYERS, extra_layer_names
from ssd.modeling.vgg16_weights import CONV_LAYERS

NORM = "conv4_3_norm"
BASE_LAYERS: tuple[str, ...] = (*CONV_LAYERS.values(), "conv6", "conv7")
# Position of each base layer in ssd.pytorch's `vgg` nn.ModuleList (between them: ReLUs, pools).
TORCH_VGG_INDEX = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28, 31, 33)
# ImageNet classifier layers a base file may carry; SSD has no use for them.
IGNORED_BASE_LAYERS = ("fc8",)
HEADS = ("loc", "conf")


def detector_layers(preset: str) -> tuple[str, ...]:
    """Every layer of a `preset` SSD that has weights, base first."""
    sources = SOURCE_LAYERS[preset]
    heads = tuple(f"{s}_mbox_{h}" for s in sources for h in HEADS)
    return (*BASE_LAYERS, NORM, *extra_layer_names(preset), *heads)


def caffe_name(layer: str) -> str:
    """The Caffe release's name of one of our layers: conv7 -> fc7, conv8_2 -> conv6_2, ..."""
    head = re.fullmatch(r"(.+)_mbox_(loc|conf)", layer)
    if head:
        return f"{caffe_name(head[1])}_mbox_{head[2]}"
    if layer in ("conv6", "conv7"):
        return "fc" + layer[-1]
    extra = re.fullmatch(r"conv(\d+)_(\d+)", layer)
    if extra and int(extra[1]) >= 8:
        return f"conv{int(extra[1]) - 2}_{extra[2]}"
    return layer


def torch_name(layer: str, preset: str, prefix: str = "vgg.") -> str:
    """ssd.pytorch's module name of one of our layers ("vgg.0", "extras.3", "conf.1", "L2Norm")."""
    if layer in BASE_LAYERS:
        return f"{prefix}{TORCH_VGG_INDEX[BASE_LAYERS.index(layer)]}"
    if layer == NORM:
        return "L2Norm"
    if layer in extra_layer_names(preset):
        return f"extras.{extra_layer_names(preset).index(layer)}"
    source, head = layer.rsplit("_mbox_", 1)
    return f"{head}.{SOURCE_LAYERS[preset].index(source)}"


def torch_tensors(state: dict[str, np.ndarray], name: str) -> list[np.ndarray] | None:
    """[weight, bias] of module `name` (just [weight] for L2Norm), None if the weight is absent."""
    keys = [f"{name}.weight"] if name == "L2Norm" else [f"{name}.weight", f"{name}.bias"]
    return [state[k] for k in keys] if all(k in state for k in keys) else None


def to_keras(arrays: list[np.ndarray]) -> list[np.ndarray]:
    """A convolution's [weight, bias] in Caffe/torch layout -> Keras: weight (out, in, kh, kw) ->
    (kh, kw, in, out); bias flat (Caffe's legacy blobs store it as (1, 1, 1, out))."""
    weight, *rest = arrays
    return [weight.transpose(2, 3, 1, 0) if weight.ndim == 4 else weight, *(a.reshape(-1) for a in rest)]


def expected_shapes(model: keras.Model, layers: tuple[str, ...]) -> dict[str, list[tuple[int, ...]]]:
    """Keras weight shapes of `layers` in `model`; a model without one of them is refused."""
    names = {layer.name for layer in model.layers}
    missing = [n for n in layers if n not in names]
    if missing:
        raise ValueError(f"model {model.name!r} has no layers {missing}: expected an SSD from "
                         f"ssd.modeling.model.build_model")
    return {n: [tuple(w.shape) for w in model.get_layer(n).weights] for n in layers}


def assign(model: keras.Model, tensors: dict[str, list[np.ndarray]], source_names: dict[str, str],
           layers: tuple[str, ...], source: str) -> list[tuple[str, str, tuple[int, ...]]]:
    """Set `layers` of `model` from `tensors` (Keras layout), after checking every one of them.

    Args:
        tensors: our layer name -> its arrays in Keras layout.
        source_names: our layer name -> the tensor's name in the file, for messages.
        source: the file, for messages.
    Returns:
        (our layer, source name, kernel shape) per assigned layer, in `layers` order.
    Raises:
        ValueError naming every missing or mis-shaped tensor; nothing is assigned then.
    """
    shapes = expected_shapes(model, layers)
    missing = [f"{source_names[n]} (for {n})" for n in layers if n not in tensors]
    wrong = [f"{source_names[n]} (for {n}): {[a.shape for a in tensors[n]]}, expected {shapes[n]}"
             for n in layers if n in tensors and [a.shape for a in tensors[n]] != shapes[n]]
    problems = ([f"missing {', '.join(missing)}"] if missing else []) + \
               ([f"mis-shaped {'; '.join(wrong)}"] if wrong else [])
    if problems:
        raise ValueError(f"{source}: cannot map onto {model.name!r}: {'; '.join(problems)}")
    for name in layers:
        model.get_layer(name).set_weights(tensors[name])
    return [(name, source_names[name], shapes[name][0]) for name in layers]
