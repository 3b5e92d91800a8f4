"""The SSD network: VGG-16 base, conv4_3 L2 normalisation, extra layers and the two heads.

`build_model` returns a Keras functional model. Its input is a batch of images, RGB, values in
the uint8 range [0, 255], shape [B, S, S, 3] (uint8 or float); the Caffe preprocessing (RGB ->
BGR, minus the configured mean, no scaling) happens inside. Its output is a dict of raw head
outputs, always float32 (also under a mixed-precision policy):

    {"box_deltas": float32 [B, A, 4], "class_logits": float32 [B, A, num_classes]}

with A default boxes in the order of `ssd.core.anchors.default_boxes` (location-major). Decoding,
softmax and the loss live elsewhere; the outputs never depend on a mode.

The geometry is Caffe's, pixel for pixel, so weights trained in Caffe compute the same outputs:
every strided 3x3 convolution pads one pixel on every side (`PaddedConv2D`; TensorFlow's "same"
pads 0 before and 1 after on an even side, a grid shifted by one pixel), and vgg512 ends with
conv12_2, a 4x4 convolution with pad 1 (2x2 -> 1x1).

Layer names follow the paper and the Caffe release (conv1_1 ... conv5_3, conv6 = fc6,
conv7 = fc7, conv8_1 ..., conv4_3_norm, `<source>_mbox_loc` / `<source>_mbox_conf`), so
weights can be mapped by name.
"""

from __future__ import annotations

import keras
from keras import layers, ops

from ssd.config import DEFAULT_BOXES, PRESETS, SSD_MEAN_BGR, DefaultBoxConfig, ModelConfig

# Feature maps the heads read, in default-box order, per preset.
SOURCE_LAYERS: dict[str, tuple[str, ...]] = {
    "vgg300": ("conv4_3_norm", "conv7", "conv8_2", "conv9_2", "conv10_2", "conv11_2"),
    "vgg512": ("conv4_3_norm", "conv7", "conv8_2", "conv9_2", "conv10_2", "conv11_2", "conv12_2"),
}

# VGG-16 blocks: (number of 3x3 convs, channels).
_VGG_BLOCKS = ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512))

# Extra layers after conv7: (name, kernel, channels, stride, pad), pad = zero pixels on every
# side as in Caffe's prototxt (ssd_pascal.py / ssd_pascal_512.py).
_EXTRAS: dict[str, tuple[tuple[str, int, int, int, int], ...]] = {
    "vgg300": (
        ("conv8_1", 1, 256, 1, 0), ("conv8_2", 3, 512, 2, 1),
        ("conv9_1", 1, 128, 1, 0), ("conv9_2", 3, 256, 2, 1),
        ("conv10_1", 1, 128, 1, 0), ("conv10_2", 3, 256, 1, 0),
        ("conv11_1", 1, 128, 1, 0), ("conv11_2", 3, 256, 1, 0),
    ),
    "vgg512": (
        ("conv8_1", 1, 256, 1, 0), ("conv8_2", 3, 512, 2, 1),
        ("conv9_1", 1, 128, 1, 0), ("conv9_2", 3, 256, 2, 1),
        ("conv10_1", 1, 128, 1, 0), ("conv10_2", 3, 256, 2, 1),
        ("conv11_1", 1, 128, 1, 0), ("conv11_2", 3, 256, 2, 1),
        ("conv12_1", 1, 128, 1, 0), ("conv12_2", 4, 256, 1, 1),
    ),
}


@keras.saving.register_keras_serializable(package="ssd")
class CaffePreprocess(layers.Layer):
    """RGB images in [0, 255] [B, H, W, 3] -> float32 BGR minus `mean_bgr` (no scaling).

    flip_channels=False keeps RGB order (minus the mean in RGB order): the layout of a model whose
    first kernel took the flip over (`fold_channel_flip`).
    """

    def __init__(self, mean_bgr: tuple[float, float, float] = SSD_MEAN_BGR, flip_channels: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.mean_bgr = tuple(float(m) for m in mean_bgr)
        self.flip_channels = bool(flip_channels)

    def call(self, images):
        x, mean = ops.cast(images, "float32"), self.mean_bgr
        if self.flip_channels:
            x = ops.flip(x, axis=-1)  # RGB -> BGR, the channel order the VGG weights were trained on
        else:
            mean = mean[::-1]
        return x - ops.convert_to_tensor(mean, "float32")

    def get_config(self):
        return {**super().get_config(), "mean_bgr": list(self.mean_bgr), "flip_channels": self.flip_channels}


@keras.saving.register_keras_serializable(package="ssd")
class PaddedConv2D(layers.Conv2D):
    """A 'valid' Conv2D after `pad` zero pixels on every side: Caffe's convolution padding.

    The layer's variables are those of a Conv2D (no extra layer in the graph), so checkpoints
    written when these convolutions used "same" padding still restore.
    """

    def __init__(self, *args, pad: int = 1, **kwargs):
        kwargs.pop("padding", None)
        super().__init__(*args, padding="valid", **kwargs)
        self.pad = int(pad)

    def call(self, inputs):
        p = self.pad
        return super().call(ops.pad(inputs, ((0, 0), (p, p), (p, p), (0, 0))))

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        grow = (lambda side: None if side is None else side + 2 * self.pad)
        return super().compute_output_shape((batch, grow(height), grow(width), channels))

    def get_config(self):
        return {**super().get_config(), "pad": self.pad}


@keras.saving.register_keras_serializable(package="ssd")
class L2Normalization(layers.Layer):
    """x / ||x|| over channels, times a learnable per-channel scale (ParseNet; SSD's conv4_3_norm).

    Args:
        scale_init: initial value of every channel's scale (20 in SSD).
        epsilon: added to the squared norm, as in Caffe's Normalize layer.
    """

    def __init__(self, scale_init: float = 20.0, epsilon: float = 1e-10, **kwargs):
        super().__init__(**kwargs)
        self.scale_init = float(scale_init)
        self.epsilon = float(epsilon)

    def build(self, input_shape):
        self.scale = self.add_weight(
            name="scale",
            shape=(input_shape[-1],),
            initializer=keras.initializers.Constant(self.scale_init),
        )

    def call(self, x):
        inverse_norm = ops.rsqrt(ops.sum(ops.square(x), axis=-1, keepdims=True) + self.epsilon)
        return x * inverse_norm * self.scale

    def get_config(self):
        return {**super().get_config(), "scale_init": self.scale_init, "epsilon": self.epsilon}


def extra_layer_names(preset: str) -> tuple[str, ...]:
    """The extra layers after conv7, in order (conv8_1, conv8_2, ...)."""
    return tuple(spec[0] for spec in _EXTRAS[preset])


def scaled_channels(channels: int, width: float) -> int:
    """Channel count of a slim/wide model: round(channels * width), at least 1."""
    return max(1, int(channels * width + 0.5))


def _conv(x, name: str, channels: int, kernel: int, stride: int = 1, pad: int | str = "same",
          dilation: int = 1, activation: str | None = "relu"):
    """A convolution with Caffe SSD's initialisation: "xavier" (uniform, fan-in) kernels, zero biases.

    `pad` is "same" (stride 1 only, where it equals Caffe's symmetric padding) or Caffe's pixels
    on every side.
    """
    # Caffe's xavier filler with its default variance_norm (FAN_IN) is Keras' LeCun uniform.
    options = dict(strides=stride, dilation_rate=dilation, activation=activation, name=name,
                   kernel_initializer="lecun_uniform", bias_initializer="zeros")
    if pad == "same" or pad == 0:
        return layers.Conv2D(channels, kernel, padding="valid" if pad == 0 else "same", **options)(x)
    return PaddedConv2D(channels, kernel, pad=pad, **options)(x)


def _vgg16_base(x, width: float):
    """VGG-16 conv1_1 ... conv7 with SSD's changes; returns (conv4_3, conv7) feature maps."""
    conv4_3 = None
    for block, (repeats, channels) in enumerate(_VGG_BLOCKS, start=1):
        for i in range(1, repeats + 1):
            x = _conv(x, f"conv{block}_{i}", scaled_channels(channels, width), 3)
        if block == 4:
            conv4_3 = x
        if block < 5:
            # 2x2/2 'same' pooling pads an odd input at the bottom/right only, which is Caffe's
            # ceil mode: 75 -> 38 (not 37).
            x = layers.MaxPooling2D(2, 2, padding="same", name=f"pool{block}")(x)
    x = layers.MaxPooling2D(3, 1, padding="same", name="pool5")(x)
    x = _conv(x, "conv6", scaled_channels(1024, width), 3, dilation=6)
    x = _conv(x, "conv7", scaled_channels(1024, width), 1)
    return conv4_3, x


def _extras(x, preset: str, width: float) -> dict:
    """The extra feature layers after conv7; returns every layer's output by name."""
    outputs = {}
    for name, kernel, channels, stride, pad in _EXTRAS[preset]:
        x = outputs[name] = _conv(x, name, scaled_channels(channels, width), kernel, stride, pad)
    return outputs


def _heads(sources: dict, boxes_per_location: tuple[int, ...], num_classes: int):
    """3x3 location and class convs on every source map, flattened location-major, concatenated."""
    deltas, logits = [], []
    for (name, fmap), k in zip(sources.items(), boxes_per_location):
        loc = _conv(fmap, f"{name}_mbox_loc", k * 4, 3, activation=None)
        conf = _conv(fmap, f"{name}_mbox_conf", k * num_classes, 3, activation=None)
        # (H, W, k * 4) -> (H * W * k, 4): row, column, box type, as ssd.core.anchors.default_boxes.
        deltas.append(layers.Reshape((-1, 4), name=f"{name}_mbox_loc_flat")(loc))
        logits.append(layers.Reshape((-1, num_classes), name=f"{name}_mbox_conf_flat")(conf))
    deltas = layers.Concatenate(axis=1, name="mbox_loc")(deltas)
    logits = layers.Concatenate(axis=1, name="mbox_conf")(logits)
    # A float32 layer at the end: outputs stay float32 under mixed precision.
    return (
        layers.Activation("linear", dtype="float32", name="box_deltas")(deltas),
        layers.Activation("linear", dtype="float32", name="class_logits")(logits),
    )


def _check_args(preset: str, num_classes: int, width: float, boxes: DefaultBoxConfig) -> None:
    if preset not in PRESETS:
        raise ValueError(f"build_model: preset must be one of {PRESETS}, got {preset!r}")
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(
            f"build_model: num_classes counts background plus at least one class (>= 2), "
            f"got {num_classes!r}"
        )
    if not width > 0:
        raise ValueError(f"build_model: width must be a positive number, got {width!r}")
    expected = DEFAULT_BOXES[preset]
    if (boxes.image_size, boxes.feature_map_sizes) != (expected.image_size, expected.feature_map_sizes):
        raise ValueError(
            f"build_model: preset {preset!r} takes {expected.image_size}x{expected.image_size} "
            f"images and has source maps {expected.feature_map_sizes}; default_boxes are for "
            f"{boxes.image_size} with maps {boxes.feature_map_sizes}"
        )


def build_model(
    preset: str,
    num_classes: int,
    width: float = 1.0,
    default_boxes: DefaultBoxConfig | None = None,
    name: str | None = None,
    mean_bgr: tuple[float, float, float] = SSD_MEAN_BGR,
) -> keras.Model:
    """The SSD network of `preset` ("vgg300" or "vgg512").

    Args:
        preset: "vgg300" or "vgg512".
        num_classes: outputs per box, INCLUDING background (21 for VOC).
        width: multiplies every base/extra channel count (`scaled_channels`); the topology and
            the number of default boxes stay the same. 1.0 is the paper's network.
        default_boxes: only its boxes per location are used; the preset's Caffe config if None.
        name: model name; `ssd_<preset>` if None.
        mean_bgr: subtracted from the BGR pixels (uint8 units); the SSD references' by default.
    Returns:
        A model mapping images [B, S, S, 3] (RGB, 0..255) to {"box_deltas": float32 [B, A, 4],
        "class_logits": float32 [B, A, num_classes]}.
    """
    boxes = DEFAULT_BOXES.get(preset) if default_boxes is None else default_boxes
    _check_args(preset, num_classes, width, boxes)
    size = boxes.image_size
    images = keras.Input((size, size, 3), name="images")
    x = CaffePreprocess(mean_bgr, name="preprocess", dtype="float32")(images)
    conv4_3, conv7 = _vgg16_base(x, width)
    # The norm is computed in float32: a sum of 512 squares is too coarse in bfloat16.
    sources = {"conv4_3_norm": L2Normalization(20.0, name="conv4_3_norm", dtype="float32")(conv4_3),
               "conv7": conv7}
    extras = _extras(conv7, preset, width)
    sources.update((n, extras[n]) for n in SOURCE_LAYERS[preset][2:])
    box_deltas, class_logits = _heads(sources, boxes.boxes_per_location, num_classes)
    return keras.Model(
        images, {"box_deltas": box_deltas, "class_logits": class_logits}, name=name or f"ssd_{preset}"
    )


def fold_channel_flip(model: keras.Model) -> keras.Model:
    """The same function with preprocessing's RGB -> BGR flip moved into conv1_1's kernel.

    conv1_1(flip(x) - mean_bgr) = conv1_1'(x - mean_rgb), with conv1_1' the kernel's input
    channels reversed (zero padding commutes with the flip): one reversal of every input image
    fewer at inference (OpenVINO runs it as reference code, a ReverseSequence). For exports only:
    training keeps Caffe's BGR kernels, so weights map one to one.
    """
    preprocess = model.get_layer("preprocess")
    if not preprocess.flip_channels:
        raise ValueError(f"model {model.name}: the channel flip is already folded into conv1_1")

    def clone(layer: layers.Layer) -> layers.Layer:
        config = layer.get_config()
        if layer is preprocess:
            config["flip_channels"] = False
        return layer.__class__.from_config(config)

    folded = keras.models.clone_model(model, clone_function=clone)
    folded.set_weights(model.get_weights())
    kernel = folded.get_layer("conv1_1").kernel  # [kh, kw, input channels, filters]
    kernel.assign(ops.flip(kernel, axis=2))
    return folded


def build_model_from_config(config: ModelConfig) -> keras.Model:
    """`build_model` from a `ModelConfig` (whose num_classes already includes background)."""
    return build_model(config.preset, config.num_classes, config.width, config.default_boxes,
                       mean_bgr=config.mean_bgr)


def source_map_sizes(model: keras.Model) -> tuple[int, ...]:
    """Side of every feature map the heads read, in default-box order (38, 19, ... for vgg300)."""
    names = {layer.name for layer in model.layers}
    preset = "vgg512" if "conv12_2" in names else "vgg300"
    return tuple(int(model.get_layer(n).output.shape[1]) for n in SOURCE_LAYERS[preset])


def kernel_weights(model: keras.Model) -> list:
    """Every convolution kernel: the weights L2 weight decay applies to (no biases, no L2 scales)."""
    return [layer.kernel for layer in model.layers if isinstance(layer, layers.Conv2D)]
