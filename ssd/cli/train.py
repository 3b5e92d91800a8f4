#!/usr/bin/env python3
"""Train SSD300 / SSD512 on Pascal VOC, COCO, or your own data in VOC, COCO JSON or YOLO txt format.

The defaults are the paper's recipe (SGD 1e-3, momentum 0.9, batch 32, 120k steps, x0.1 at 80k
and 100k, weight decay 5e-4) for VOC07+12 trainval, validated on VOC07 test. The run directory
gets config.json, checkpoints/, best/ (best validation mAP), logs/ (TensorBoard) and train.log.
Running the same command again resumes from the last checkpoint; Ctrl-C saves one and exits.

examples:
  # the paper's recipe on VOC07+12 (all visible GPUs are used)
  python train_detector.py --data-root ~/data/VOCdevkit --run-dir runs/ssd300 \\
      --base-weights ~/.keras/models/vgg16_weights_tf_dim_ordering_tf_kernels.h5
  # the references' own start: Caffe's fc-reduced base (or ssd.pytorch's vgg16_reducedfc.pth)
  python train_detector.py ... --base-weights VGG_ILSVRC_16_layers_fc_reduced.caffemodel
  # fine-tune a trained VOC model on your person/car data, the class heads starting from VOC's rows
  python train_detector.py --data-root ~/data/mine --run-dir runs/mine --init-from runs/ssd300 \\
      --init-classes person,car --lr 1e-4 --iterations 5000
  # a slim model on the synthetic set, from scratch, on a CPU
  python train_detector.py --data-root data/synthetic --train-split trainval --val-split test \\
      --run-dir runs/synthetic --width 0.25 --from-scratch --optimizer adam --lr 1e-3 \\
      --schedule cosine --warmup-steps 200 --epochs 20 --batch-size 16
  # the Caffe COCO recipe (COCO default boxes, 81 outputs, 400k steps, COCO AP keeps best/)
  python train_detector.py --data-root ~/data/coco --run-dir runs/coco300 --recipe coco \\
      --base-weights ~/.keras/models/vgg16_weights_tf_dim_ordering_tf_kernels.h5
  # your own data as the labelling tool exported it (README, "Your own data"): its splits are found
  python train_detector.py --data ~/data/shapes/data.yaml ...              # Ultralytics YOLO
  python train_detector.py --data ~/data/labelimg --val-fraction 0.2 ...   # one split: hold 20% out
  # repeat a run elsewhere, changing one option
  python train_detector.py --config runs/ssd300/config.json --run-dir runs/again --lr 2e-3
  # find a learning rate first: writes lr_finder.csv and lr_finder.png
  python train_detector.py ... --lr-finder
  # several machines: the same command on each, with TF_CONFIG describing the cluster
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

from ssd_datasets import load_train_val
from ssd.cli import configure_logging, writable_dir_problem
from ssd.config import BOX_SETS, EVAL_METRICS, PRESETS, ModelConfig
from ssd.engine.recipe import OPTIMIZERS, PRECISIONS, RECIPES, SCHEDULES, STRATEGIES, TrainConfig
from ssd.engine.run_lock import hold_run_dir, release_run_dir
from ssd.evaluation.report import percent
from ssd.engine.run_config import DEFAULTS, check_initialisation, check_objects, resolve_configs, resolve_model_config
from ssd.records import DATA_FORMATS

def _default(name: str) -> str:
    value = getattr(DEFAULTS, name)
    if isinstance(value, tuple):
        value = ",".join(str(v) for v in value) if all(isinstance(v, int) for v in value) else " ".join(value)
    return f"(default: {value})"


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _name_list(text: str) -> tuple[str, ...]:
    names = tuple(v.strip() for v in text.split(",") if v.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated class names, got {text!r}")
    return names


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                argument_default=argparse.SUPPRESS)
    p.add_argument("--run-dir", required=True, type=Path,
                   help="where config.json, checkpoints and logs go; an existing run resumes")
    p.add_argument("--config", type=Path, help="a run's config.json (or run directory) to repeat; the flags "
                   "given here override it (a --run-dir that already has a config.json uses its own)")
    data = p.add_argument_group("data")
    data.add_argument("--data-root", "--data", dest="data_root",
                      help="the dataset as a tool exported it, a folder or a file: Ultralytics data.yaml, a COCO "
                      "folder or .json (Roboflow, CVAT, Label Studio result.json), a YOLO folder (images/, labels/), "
                      f"a VOCdevkit, a VOC folder or a LabelImg folder of XML files {_default('data_root')}")
    data.add_argument("--data-format", choices=DATA_FORMATS, help="the dataset's format (default: recognised from "
                      "its layout)")
    data.add_argument("--images", dest="image_dir", metavar="DIR", help="COCO: the folder the file_names are "
                      "relative to (default: the JSON's folder, then images/<split>, images/, then the root)")
    data.add_argument("--classes", help="classes to train, comma-separated or a file with one per line, in the "
                      "order wanted; objects of other classes are left out (default: the dataset's: data.yaml's "
                      "names, the COCO categories, classes.txt or CVAT's labelmap.txt; a VOCdevkit: the 20 VOC "
                      "classes; other VOC folders: the names in the XML files, sorted)")
    data.add_argument("--train-split", dest="train_splits", action="append", metavar="SPLIT",
                      help="a split to train on, repeatable: the export's name for it (train, Train, "
                           "VOC2007:trainval), a COCO JSON file or a YOLO list file / image folder (default: the "
                           "export's own: train, trainval; all of a one-split export)")
    data.add_argument("--val-split", dest="val_splits", action="append", metavar="SPLIT",
                      help="a split to evaluate on, repeatable (default: the export's own: val, valid, "
                           "Validation, test; none for a one-split export)")
    data.add_argument("--val-fraction", type=float, metavar="F",
                      help="hold this fraction of the training images out for validation (random, seeded by "
                           "--seed; for exports with one split)")
    data.add_argument("--exclude-difficult", dest="include_difficult", action="store_false",
                      help="drop objects marked difficult from training (kept by default, as in Caffe)")
    data.add_argument("--strict", action="store_true",
                      help="refuse the data on the first bad annotation or image (default: skip and report "
                           "them; an image that cannot be decoded during training is skipped and counted)")
    data.add_argument("--expand-probability", type=float, metavar="P",
                      help=f"probability of the zoom-out augmentation {_default('expand_probability')}")
    data.add_argument("--workers", type=int, metavar="N", help=f"data worker processes {_default('workers')}")
    data.add_argument("--max-boxes", type=int, metavar="N", help=f"boxes kept per image {_default('max_boxes')}")
    model = p.add_argument_group("model")
    model.add_argument("--preset", choices=PRESETS, help="network and input size (default: vgg300)")
    model.add_argument("--boxes", choices=tuple(BOX_SETS), help="the Caffe release's default boxes for VOC or for "
                       "COCO (smaller first level) (default: coco with --recipe coco, else voc)")
    model.add_argument("--width", type=float, help="channel multiplier; 1.0 is the paper's network (default: 1.0)")
    model.add_argument("--base-weights", "--vgg16-weights", dest="vgg16_weights", metavar="PATH",
                       help="ImageNet VGG-16 base: the Keras file with top (vgg16_weights_tf_dim_ordering_tf_kernels.h5), "
                       "Caffe's VGG_ILSVRC_16_layers_fc_reduced.caffemodel or ssd.pytorch's vgg16_reducedfc.pth; "
                       "required unless --from-scratch (--vgg16-weights is an alias)")
    model.add_argument("--from-scratch", action="store_true", help="train without ImageNet weights")
    model.add_argument("--init-from", metavar="RUN_DIR", help="fine-tune a trained run: its base, extra layers "
                       "and location heads (same preset and width); class heads start afresh unless --init-classes")
    model.add_argument("--init-classes", type=_name_list, metavar="A,B",
                       help="with --init-from: the source run's classes that start this run's classes, one each "
                            "in order (background plus their rows of every class head)")
    opt = p.add_argument_group("optimisation")
    opt.add_argument("--recipe", choices=tuple(RECIPES), help="start from a paper recipe: voc (120k steps, x0.1 at "
                     "80k/100k) or coco (400k, x0.1 at 280k/360k, splits train2017/val2017, COCO metric); "
                     "the flags given here override it")
    opt.add_argument("--batch-size", type=int, metavar="N", help=f"global batch {_default('batch_size')}")
    opt.add_argument("--iterations", type=int, metavar="N", help=f"training steps {_default('iterations')}")
    opt.add_argument("--epochs", type=int, metavar="N", help="train for this many epochs instead of --iterations")
    opt.add_argument("--optimizer", choices=OPTIMIZERS, help=f"SGD with momentum, or Adam {_default('optimizer')}")
    opt.add_argument("--momentum", type=float, help=f"SGD momentum {_default('momentum')}")
    opt.add_argument("--lr", dest="learning_rate", type=float, metavar="RATE",
                     help=f"base learning rate {_default('learning_rate')}")
    opt.add_argument("--schedule", choices=SCHEDULES, help=f"learning-rate schedule {_default('schedule')}")
    opt.add_argument("--boundaries", type=_int_list, metavar="STEPS",
                     help=f"steps where the step schedule multiplies by --decay {_default('boundaries')}")
    opt.add_argument("--decay", type=float, help=f"step factor, or per-epoch factor for exponential {_default('decay')}")
    opt.add_argument("--power", type=float, help=f"polynomial power {_default('power')}")
    opt.add_argument("--min-lr", dest="min_learning_rate", type=float, metavar="RATE",
                     help=f"floor of polynomial/cosine/cyclic {_default('min_learning_rate')}")
    opt.add_argument("--cycle-steps", type=int, metavar="N", help=f"period of the cyclic schedule {_default('cycle_steps')}")
    opt.add_argument("--warmup-steps", type=int, metavar="N", help=f"linear warmup {_default('warmup_steps')}")
    opt.add_argument("--weight-decay", type=float, help=f"L2 on kernels {_default('weight_decay')}")
    opt.add_argument("--bias-lr-multiplier", type=float, metavar="M",
                     help=f"biases learn at M x the rate, never decayed (Caffe: 2) {_default('bias_lr_multiplier')}")
    opt.add_argument("--no-decay-l2-scales", dest="decay_l2_scales", action="store_false",
                     help="no weight decay on conv4_3_norm's scales (Caffe decays them like kernels)")
    opt.add_argument("--adam-epsilon", type=float, metavar="EPS", help=f"Adam's epsilon {_default('adam_epsilon')}")
    opt.add_argument("--mixed-precision", choices=PRECISIONS,
                     help="float16 on GPUs, bfloat16 on recent CPUs/TPUs (default: float32)")
    opt.add_argument("--xla", action="store_true", help="compile the train step with XLA (GPUs)")
    opt.add_argument("--seed", type=int, help=f"data order and augmentation seed {_default('seed')}")
    run = p.add_argument_group("run")
    run.add_argument("--eval-metric", choices=EVAL_METRICS,
                     help=f"validation metric that best/ is kept by {_default('eval_metric')}")
    run.add_argument("--eval-every", type=int, metavar="N",
                     help=f"evaluate every N epochs and at the end, 0 = never {_default('eval_every')}")
    run.add_argument("--checkpoint-every", type=int, metavar="N", help=f"save every N steps {_default('checkpoint_every')}")
    run.add_argument("--strategy", choices=STRATEGIES, default="auto",
                     help="tf.distribute strategy; auto = multi_worker when TF_CONFIG is set, mirrored "
                          "over several GPUs, else one device (default: auto)")
    run.add_argument("--lr-finder", action="store_true",
                     help="run a learning-rate range test instead of training: writes lr_finder.csv and "
                          "lr_finder.png into the run directory and prints a suggested rate")
    run.add_argument("--lr-finder-steps", type=int, default=200, metavar="N", help="steps of the range test (default: 200)")
    run.add_argument("--lr-finder-range", type=float, nargs=2, default=(1e-6, 1.0), metavar=("MIN", "MAX"),
                     help="rates the range test sweeps (default: 1e-6 1.0)")
    run.add_argument("--verbose", action="store_true", help="list every skipped annotation problem; full tracebacks")
    return p


def configs_from_args(args: argparse.Namespace) -> tuple[ModelConfig | None, TrainConfig]:
    """The run's configs as the flags decide them (ssd.engine.run_config holds the policy)."""
    return resolve_configs(args.run_dir, getattr(args, "config", None), getattr(args, "recipe", None), vars(args))


def model_options(args: argparse.Namespace) -> dict[str, Any]:
    """The model flags given (--preset, --width, --boxes)."""
    return {k: getattr(args, k) for k in ("preset", "width", "boxes") if hasattr(args, k)}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    verbose = getattr(args, "verbose", False)
    configure_logging(verbose)
    try:
        return _run(args, verbose)
    except KeyboardInterrupt:
        print("train_detector.py: interrupted before training started", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError) as error:
        if verbose:
            raise
        print(f"train_detector.py: error: {error}", file=sys.stderr)
        return 2
    finally:
        release_run_dir(args.run_dir)


def _run(args: argparse.Namespace, verbose: bool) -> int:
    problem = writable_dir_problem(args.run_dir)
    if problem:  # found now, not at the first checkpoint after loading the data and building the model
        raise ValueError(f"--run-dir {args.run_dir} {problem}: choose a directory you can write")
    if args.run_dir.exists() and "TF_CONFIG" not in os.environ:
        # A run another trainer has is refused now, before TensorFlow starts; the Trainer takes the
        # run directory in any case (in a cluster, only the chief's does).
        hold_run_dir(args.run_dir)
    model_config, config = configs_from_args(args)
    check_initialisation(config)
    classes = getattr(args, "classes", None)
    data = load_train_val(config.data_root, config.train_splits, config.val_splits,
                          classes or (model_config and model_config.class_names), config.val_fraction, config.seed,
                          config.data_format, config.image_dir, config.include_difficult, config.strict, verbose,
                          run_classes=not classes and model_config is not None)
    config = dataclasses.replace(config, train_splits=data.train_splits,
                                 val_splits=() if config.val_fraction else data.val_splits)
    train_set = data.train
    check_objects(train_set, config)
    model_config = resolve_model_config(args.run_dir, model_config, train_set, model_options(args),
                                        getattr(args, "recipe", None), config.init_from)

    from ssd.data.pipeline import PipelineError
    from ssd.engine.distribute import make_strategy
    from ssd.engine.trainer import NonFiniteLossError, Trainer
    from ssd.modeling.run_dir import StorageFullError

    strategy = make_strategy(args.strategy)
    if getattr(args, "lr_finder", False):
        from ssd.engine.lr_finder import lr_range_test
        trainer = Trainer(model_config, config, args.run_dir, train_set, strategy=strategy, range_test=True)
        low, high = args.lr_finder_range
        suggestion = lr_range_test(trainer, args.run_dir, low, high, args.lr_finder_steps)
        print(f"suggested learning rate: {suggestion:.2e} (curve in {args.run_dir / 'lr_finder.png'})")
        return 0
    trainer = Trainer(model_config, config, args.run_dir, train_set, data.val, strategy)
    try:
        result = trainer.fit()
    except (NonFiniteLossError, PipelineError) as error:
        print(f"train_detector.py: error: {error}", file=sys.stderr)
        return 1
    except StorageFullError as error:
        print(f"train_detector.py: error: {error.strerror}", file=sys.stderr)
        return 1
    best = f"; best val {config.eval_metric} {percent(result.best_map)}" if result.best_map is not None else ""
    state = "interrupted" if result.interrupted else "finished"
    print(f"{state} at step {result.step} (epoch {result.epoch}){best}; run directory: {args.run_dir}")
    return 130 if result.interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
