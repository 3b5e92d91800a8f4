#!/usr/bin/env python3
"""Train SSD300 / SSD512 on Pascal VOC or any VOC-format dataset.

Examples:
  # the paper's recipe on VOC07+12 (one GPU, or several: all visible GPUs are used)
  python train_detector.py --data-root ~/data/VOCdevkit --run-dir runs/ssd300 \\
      --vgg16-weights ~/.keras/models/vgg16_weights_tf_dim_ordering_tf_kernels.h5
  # resume: the same command again;  repeat a run elsewhere: --config runs/ssd300/config.json
  # a slim model on the synthetic set, from scratch
  python train_detector.py --data-root data/synthetic --train-split train --val-split test \\
      --width 0.125 --from-scratch --optimizer adam --lr 1e-3 --epochs 20 --batch-size 16
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

from datasets import load_dataset
from ssd.cli import configure_logging
from ssd.config import OPTIMIZERS, PRECISIONS, PRESETS, ModelConfig, TrainConfig

DEFAULTS = TrainConfig()


def _default(name: str) -> str:
    return f"(default: {getattr(DEFAULTS, name)})"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                argument_default=argparse.SUPPRESS)
    p.add_argument("--run-dir", required=True, type=Path,
                   help="where config, checkpoints, logs go; an existing run resumes")
    p.add_argument("--config", type=Path, help="a run's config.json to repeat; flags given here override it")
    data = p.add_argument_group("data")
    data.add_argument("--data-root", help="a VOCdevkit folder, or a VOC-format dataset folder")
    data.add_argument("--classes", help="class names, comma-separated or a file with one per line "
                      "(default: <data-root>/classes.txt if present, else the 20 VOC classes)")
    data.add_argument("--train-split", dest="train_splits", action="append",
                      help=f"a split to train on, repeatable, e.g. VOC2007:trainval {_default('train_splits')}")
    data.add_argument("--val-split", dest="val_splits", action="append",
                      help=f"a split to evaluate on, repeatable {_default('val_splits')}")
    data.add_argument("--exclude-difficult", dest="include_difficult", action="store_false",
                      help="drop objects marked difficult from training (kept by default, as in Caffe)")
    data.add_argument("--expand-probability", type=float,
                      help=f"probability of the zoom-out augmentation {_default('expand_probability')}")
    data.add_argument("--workers", type=int, help=f"data worker processes {_default('workers')}")
    data.add_argument("--max-boxes", type=int, help=f"boxes kept per image {_default('max_boxes')}")
    model = p.add_argument_group("model")
    model.add_argument("--preset", choices=PRESETS, help="network and input size (default: vgg300)")
    model.add_argument("--width", type=float, help="channel multiplier; 1.0 is the paper's network (default: 1.0)")
    model.add_argument("--vgg16-weights", help="Keras ImageNet VGG-16 file with top "
                       "(vgg16_weights_tf_dim_ordering_tf_kernels.h5)")
    model.add_argument("--from-scratch", action="store_true", help="train without ImageNet weights")
    opt = p.add_argument_group("optimisation")
    opt.add_argument("--batch-size", type=int, help=f"global batch {_default('batch_size')}")
    opt.add_argument("--iterations", type=int, help=f"training steps {_default('iterations')}")
    opt.add_argument("--epochs", type=int, help="train for this many epochs instead of --iterations")
    opt.add_argument("--optimizer", choices=OPTIMIZERS, help=f"{_default('optimizer')}")
    opt.add_argument("--momentum", type=float, help=f"SGD momentum {_default('momentum')}")
    opt.add_argument("--lr", dest="learning_rate", type=float, help=f"base learning rate {_default('learning_rate')}")
    opt.add_argument("--schedule", choices=("constant", "step", "exponential", "polynomial", "cosine", "cyclic"),
                     help=f"learning-rate schedule {_default('schedule')}")
    opt.add_argument("--boundaries", type=lambda s: tuple(int(v) for v in s.split(",")),
                     help="steps where the step schedule multiplies by --decay (default: 80000,100000)")
    opt.add_argument("--decay", type=float, help="step factor, or per-epoch factor for exponential (default: 0.1)")
    opt.add_argument("--power", type=float, help=f"polynomial power {_default('power')}")
    opt.add_argument("--min-lr", dest="min_learning_rate", type=float,
                     help=f"floor of polynomial/cosine/cyclic {_default('min_learning_rate')}")
    opt.add_argument("--cycle-steps", type=int, help=f"period of the cyclic schedule {_default('cycle_steps')}")
    opt.add_argument("--warmup-steps", type=int, help=f"linear warmup {_default('warmup_steps')}")
    opt.add_argument("--weight-decay", type=float, help=f"L2 on kernels {_default('weight_decay')}")
    opt.add_argument("--mixed-precision", choices=PRECISIONS,
                     help="float16 on GPUs, bfloat16 on recent CPUs/TPUs (default: float32)")
    opt.add_argument("--xla", action="store_true", help="compile the train step with XLA (GPUs)")
    opt.add_argument("--seed", type=int, help=f"data order and augmentation seed {_default('seed')}")
    run = p.add_argument_group("run")
    run.add_argument("--eval-every", type=int, help=f"evaluate every N epochs, 0 = never {_default('eval_every')}")
    run.add_argument("--checkpoint-every", type=int, help=f"save every N steps {_default('checkpoint_every')}")
    run.add_argument("--strategy", choices=("auto", "default", "mirrored", "multi_worker"), default="auto",
                     help="tf.distribute strategy; auto = multi-worker with TF_CONFIG, mirrored over "
                          "several GPUs, else one device")
    run.add_argument("--lr-finder", action="store_true",
                     help="run a learning-rate range test instead of training; writes lr_finder.csv/.png")
    run.add_argument("--verbose", action="store_true", help="list every skipped annotation problem")
    return p


def resolve_configs(args: argparse.Namespace) -> tuple[ModelConfig | None, TrainConfig]:
    """Run dir's config, else --config, else defaults; then the flags given on the command line."""
    from ssd.run_dir import load_run_config

    source = args.run_dir / "config.json" if (args.run_dir / "config.json").is_file() else getattr(args, "config", None)
    model_config, train_config = load_run_config(source) if source else (None, DEFAULTS)
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    overrides = {k: (tuple(v) if isinstance(v, list) else v) for k, v in vars(args).items() if k in fields}
    return model_config, dataclasses.replace(train_config, **overrides)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(getattr(args, "verbose", False))
    model_config, config = resolve_configs(args)
    verbose = getattr(args, "verbose", False)
    train_set = load_dataset(config.data_root, config.train_splits, getattr(args, "classes", None),
                             include_difficult=config.include_difficult, verbose=verbose)
    model_overrides = {k: getattr(args, k) for k in ("preset", "width") if hasattr(args, k)}
    if model_config is None:
        model_config = ModelConfig(model_overrides.get("preset", "vgg300"), train_set.class_names,
                                   width=model_overrides.get("width", 1.0))
    elif model_overrides:
        model_config = dataclasses.replace(model_config, **model_overrides)
    if tuple(model_config.class_names) != tuple(train_set.class_names):
        raise SystemExit(f"error: the run was trained on classes {model_config.class_names}, "
                         f"the data has {train_set.class_names}")

    from ssd.training import Trainer, make_strategy

    trainer = Trainer(model_config, config, args.run_dir, make_strategy(args.strategy))
    if getattr(args, "lr_finder", False):
        from ssd.lr_finder import lr_range_test
        suggestion = lr_range_test(trainer, train_set, args.run_dir)
        print(f"suggested learning rate: {suggestion:.2e} (curve in {args.run_dir}/lr_finder.png)")
        return 0
    val_set = load_dataset(config.data_root, config.val_splits, model_config.class_names,
                           verbose=verbose) if config.val_splits else None
    result = trainer.fit(train_set, val_set)
    best = f"; best val mAP {result.best_map:.4f}" if result.best_map is not None else ""
    state = "interrupted" if result.interrupted else "finished"
    print(f"{state} at step {result.step} (epoch {result.epoch}){best}; run directory: {args.run_dir}")
    return 130 if result.interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
