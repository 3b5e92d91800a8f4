"""Fine-tuning from a trained detector: copy its weights into a model for new classes.

Everything but the class heads (`<source>_mbox_conf`) is copied by layer name: the VGG-16 base,
conv4_3_norm's scales, the extra layers and the location heads. A class head has k * (C + 1)
output channels, box type major: channel j * (C + 1) + c is class c of box type j, the order a
(H, W, k * (C + 1)) output reshapes to (H * W * k, C + 1). Its weights are either left as the
new model initialised them (new classes), or sub-sampled: background (c = 0) plus the source
classes named in `init_classes`, in that order, for every box type, so that the new model's
logits for those classes are the source model's before any training step.

The new model must have the source's preset, width and default boxes: `finetune_model_config`
makes its config from the source's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from ssd.config import ModelConfig
from ssd.modeling.run_dir import load_model_config, load_trained_model

CLASS_HEAD_SUFFIX = "_mbox_conf"


@dataclass(frozen=True)
class FineTuneInit:
    """What `init_from_run` did: layers copied, class heads sub-sampled or left re-initialised."""

    source: str
    copied: tuple[str, ...]
    subsampled: tuple[str, ...]
    reinitialised: tuple[str, ...]
    class_rows: tuple[int, ...]  # source class ids kept, background (0) first; () when re-initialised

    def summary(self) -> str:
        heads = (f"class heads sub-sampled to source classes {list(self.class_rows[1:])} (+ background)"
                 if self.subsampled else f"{len(self.reinitialised)} class heads re-initialised")
        return f"initialised from {self.source}: {len(self.copied)} layers copied, {heads}"


def finetune_model_config(source: ModelConfig, class_names: Sequence[str],
                          category_ids: Sequence[int] | None = None) -> ModelConfig:
    """The source's config (preset, width, default boxes, preprocessing) with the new data's classes."""
    ids = None if category_ids is None else tuple(category_ids)
    return dataclasses.replace(source, class_names=tuple(class_names), category_ids=ids)


def class_rows(source_classes: Sequence[str], init_classes: Sequence[str]) -> tuple[int, ...]:
    """Source class ids to keep: 0 (background), then the id of each named class, in order.

    ValueError naming the unknown classes and the available ones.
    """
    unknown = [name for name in init_classes if name not in source_classes]
    if unknown:
        raise ValueError(f"--init-classes: {unknown} are not classes of the source model; "
                         f"it has {list(source_classes)}")
    if len(set(init_classes)) != len(init_classes):
        raise ValueError(f"--init-classes names a class twice: {list(init_classes)}")
    return (0, *(list(source_classes).index(name) + 1 for name in init_classes))


def subsample_class_head(kernel: np.ndarray, bias: np.ndarray, num_classes: int,
                         rows: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """A class head's kernel [kh, kw, in, k * num_classes] and bias [k * num_classes] -> the same
    for k * len(rows) outputs: for every box type j, channels j * num_classes + rows."""
    boxes = kernel.shape[-1] // num_classes
    keep = (np.arange(boxes)[:, None] * num_classes + np.asarray(rows)[None, :]).reshape(-1)
    return kernel[..., keep], bias[keep]


def check_compatible(source: ModelConfig, target: ModelConfig, source_dir: str | Path) -> None:
    """The target must share the source's preset, width and default boxes (the location heads'
    offsets are relative to those boxes)."""
    for name in ("preset", "width", "default_boxes"):
        if getattr(source, name) != getattr(target, name):
            raise ValueError(f"--init-from {source_dir}: the source run has {name} {getattr(source, name)!r}, "
                             f"this run {getattr(target, name)!r}; fine-tuning needs the same {name}")


def init_from_run(model: keras.Model, config: ModelConfig, source_dir: str | Path,
                  init_classes: Sequence[str] | None = None, checkpoint: str = "best") -> FineTuneInit:
    """Initialise `model` (built from `config`) from the trained run in `source_dir`; see the module docstring.

    Args:
        init_classes: source class names, one per class of `config` in its order; None leaves the
            class heads as initialised.
        checkpoint: "best" (falling back to the latest) or "latest".
    """
    source_config = load_model_config(source_dir)
    check_compatible(source_config, config, source_dir)
    rows: tuple[int, ...] = ()
    if init_classes is not None:
        rows = class_rows(source_config.class_names, init_classes)
        if len(init_classes) != len(config.class_names):
            raise ValueError(f"--init-classes names {len(init_classes)} source classes {list(init_classes)}, "
                             f"the data has {len(config.class_names)}: {list(config.class_names)} (one each, in order)")
    source, _ = load_trained_model(source_dir, checkpoint)
    copied, subsampled, reinitialised = [], [], []
    for layer in model.layers:
        if not layer.weights:
            continue
        weights = source.get_layer(layer.name).get_weights()
        if layer.name.endswith(CLASS_HEAD_SUFFIX):
            if not rows:
                reinitialised.append(layer.name)
                continue
            weights = list(subsample_class_head(*weights, source_config.num_classes, rows))
            subsampled.append(layer.name)
        else:
            copied.append(layer.name)
        _set_weights(layer, weights, source_dir)
    return FineTuneInit(str(source_dir), tuple(copied), tuple(subsampled), tuple(reinitialised), rows)


def _set_weights(layer: keras.layers.Layer, weights: list[np.ndarray], source_dir: str | Path) -> None:
    want = [tuple(w.shape) for w in layer.weights]
    got = [tuple(w.shape) for w in weights]
    if want != got:
        raise ValueError(f"--init-from {source_dir}: layer {layer.name} has weights of shapes {got}, "
                         f"this model needs {want}")
    layer.set_weights(weights)
