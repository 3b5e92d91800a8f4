"""What a training run is configured with, decided once before anything slow.

    config.json of the run directory (a resumed run)  >  --config  >  the defaults,
    then a recipe (`ssd.engine.recipe.RECIPES`), then the options given on the command line.

The model follows the data and the run: a new run's model from the given preset, width and boxes
(or the `--init-from` source's, for fine-tuning); a resumed run keeps its own and refuses options
that would not fit its checkpoints. Other options may change on resume; `changed_options` lists
each change, which the trainer prints and records in train.log.

    run_dir/config.json        {"model": ModelConfig, "train": TrainConfig}
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ssd.config import BASE_WEIGHT_SUFFIXES, ModelConfig
from ssd.engine.recipe import RECIPES, TrainConfig
from ssd.modeling.run_dir import RUN_CONFIG, read_run_json
from ssd.records import DetectionDataset

log = logging.getLogger(__name__)
DEFAULTS = TrainConfig()


def load_run_config(path: str | Path) -> tuple[ModelConfig, TrainConfig]:
    """Both configs of a run directory (or of a config.json file itself)."""
    data = read_run_json(path)
    return ModelConfig.from_dict(data["model"]), TrainConfig.from_dict(data.get("train", {}))


def resolve_configs(run_dir: Path, config_source: str | Path | None, recipe: str | None,
                    options: Mapping[str, Any]) -> tuple[ModelConfig | None, TrainConfig]:
    """The run dir's own config, else `config_source`, else the defaults; then `recipe`; then
    `options` (TrainConfig fields; other keys are ignored, lists become tuples)."""
    own = Path(run_dir) / RUN_CONFIG
    source = own if own.is_file() else config_source
    model_config, train_config = load_run_config(source) if source else (None, DEFAULTS)
    if recipe:
        train_config = dataclasses.replace(train_config, **RECIPES[recipe])
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    overrides = {k: (tuple(v) if isinstance(v, list) else v) for k, v in options.items() if k in fields}
    return model_config, dataclasses.replace(train_config, **overrides)


def resolve_model_config(run_dir: Path, model_config: ModelConfig | None, train_set: DetectionDataset,
                         given: Mapping[str, Any], recipe: str | None = None,
                         init_from: str | None = None) -> ModelConfig:
    """A new run's model from `given` (preset, width, boxes; or the init_from run's); a resumed
    run's own, refusing given values that would change it."""
    if model_config is None and init_from:
        return finetune_config(init_from, given, train_set)
    if model_config is None:
        boxes = given.get("boxes", "coco" if recipe == "coco" else "voc")
        return ModelConfig(given.get("preset", "vgg300"), train_set.class_names, width=given.get("width", 1.0),
                           boxes=boxes, category_ids=train_set.category_ids)
    if (Path(run_dir) / RUN_CONFIG).is_file():
        changed = {k: v for k, v in given.items() if getattr(model_config, k) != v}
        if changed:
            raise ValueError(f"--run-dir {run_dir} holds a {model_config.preset} run of width "
                             f"{model_config.width}; {changed} would not fit its checkpoints: use a new --run-dir")
    elif given:
        model_config = ModelConfig(given.get("preset", model_config.preset), model_config.class_names,
                                   width=given.get("width", model_config.width),
                                   boxes=given.get("boxes", model_config.boxes), category_ids=model_config.category_ids)
    if tuple(model_config.class_names) != tuple(train_set.class_names):
        raise ValueError(f"the run was made for classes {list(model_config.class_names)}, the data (--classes "
                         f"or classes.txt) has {list(train_set.class_names)}")
    return model_config


def finetune_config(init_from: str, given: Mapping[str, Any], train_set: DetectionDataset) -> ModelConfig:
    """The --init-from run's model config for the data's classes; preset/width/boxes must agree with it."""
    from ssd.modeling.finetune import finetune_model_config
    from ssd.modeling.run_dir import load_model_config

    source = load_model_config(init_from)
    changed = {k: v for k, v in given.items() if getattr(source, k) != v}
    if changed:
        raise ValueError(f"--init-from {init_from} is a {source.preset} run of width {source.width} "
                         f"({source.boxes} boxes); {changed} would not fit its weights: fine-tuning keeps "
                         "the source's preset, width and boxes")
    return finetune_model_config(source, train_set.class_names, train_set.category_ids)


def changed_options(saved: TrainConfig, now: TrainConfig) -> list[tuple[str, Any, Any]]:
    """(option, saved value, value now) for every TrainConfig field that differs, in field order."""
    return [(f.name, getattr(saved, f.name), getattr(now, f.name)) for f in dataclasses.fields(TrainConfig)
            if getattr(saved, f.name) != getattr(now, f.name)]


def check_objects(train_set: DetectionDataset, config: TrainConfig) -> None:
    """Refuse a training set without images or objects of its classes; warn about classes never seen."""
    if not train_set.samples:
        raise ValueError(f"the training splits {list(config.train_splits)} of {config.data_root} have no usable "
                         "image: every one was skipped (the summary above says why; --verbose lists each)")
    counts = Counter(int(label) for s in train_set.samples for label in s.labels)
    if not counts:
        raise ValueError(f"the training split has no objects of the classes {list(train_set.class_names)}: "
                         "do --classes (or classes.txt) match the annotations' <name> tags?")
    unseen = [name for i, name in enumerate(train_set.class_names, 1) if counts[i] == 0]
    if unseen:
        log.warning("no training objects of classes %s: check --classes", unseen)


def check_initialisation(config: TrainConfig) -> None:
    """Before anything slow: base weights that exist, or an explicit from_scratch."""
    if config.vgg16_weights and not Path(config.vgg16_weights).expanduser().is_file():
        raise FileNotFoundError(f"--base-weights {config.vgg16_weights}: no such file")
    if config.vgg16_weights and Path(config.vgg16_weights).suffix.lower() not in BASE_WEIGHT_SUFFIXES:
        raise ValueError(f"--base-weights {config.vgg16_weights}: expected a file ending in "
                         f"{', '.join(BASE_WEIGHT_SUFFIXES)} (Keras, Caffe or PyTorch VGG-16)")
    if config.init_from:
        if not (Path(config.init_from) / RUN_CONFIG).is_file():
            raise FileNotFoundError(f"--init-from {config.init_from}: not a run directory (no {RUN_CONFIG})")
        if config.vgg16_weights:
            raise ValueError("--init-from and --base-weights both initialise the base: give one of them")
        return
    if not config.vgg16_weights and not config.from_scratch:
        raise ValueError("no ImageNet weights: pass --base-weights PATH (the Keras file "
                         "vgg16_weights_tf_dim_ordering_tf_kernels.h5, Caffe's fc-reduced .caffemodel or "
                         "vgg16_reducedfc.pth) or --from-scratch")
