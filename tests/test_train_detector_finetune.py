"""train_detector.py --init-from / --init-classes and the Caffe recipe flags, as a user meets them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import train_detector
from ssd.config import ModelConfig, TrainConfig
from ssd.modeling.run_dir import save_run_config


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    from datasets.synthetic import generate_synthetic_voc

    root = tmp_path_factory.mktemp("synthetic")
    generate_synthetic_voc(root, num_train=8, num_test=2, image_size_range=(64, 96))
    return root


def tiny_args(root: Path, run_dir: Path, *extra: str) -> list[str]:
    """A slim, quick run on the synthetic set (two of its classes)."""
    return ["--run-dir", str(run_dir), "--data-root", str(root), "--train-split", "trainval",
            "--val-split", "test", "--classes", "circle,square", "--batch-size", "4", "--workers", "1",
            "--expand-probability", "0", "--eval-every", "0", *extra]


@pytest.mark.parametrize("flags, message", [
    (["--width", "0.25"], "{'width': 0.25} would not fit its weights"),
    (["--preset", "vgg512"], "{'preset': 'vgg512'} would not fit its weights"),
])
def test_a_different_preset_or_width_than_the_source_is_refused(root, tmp_path, capsys, flags, message):
    save_run_config(tmp_path / "source", ModelConfig("vgg300", ("a", "b"), width=0.125), TrainConfig())
    code = train_detector.main([*tiny_args(root, tmp_path / "run"), "--init-from", str(tmp_path / "source"), *flags])
    assert code == 2
    err = capsys.readouterr().err
    assert f"--init-from {tmp_path / 'source'} is a vgg300 run of width 0.125" in err and message in err
    assert not (tmp_path / "run").exists()


def test_init_from_must_be_a_run_directory(root, tmp_path, capsys):
    assert train_detector.main([*tiny_args(root, tmp_path / "run"), "--init-from", str(tmp_path)]) == 2
    assert f"--init-from {tmp_path}: not a run directory (no config.json)" in capsys.readouterr().err


def test_init_classes_without_init_from_is_refused(root, tmp_path, capsys):
    assert train_detector.main([*tiny_args(root, tmp_path / "run"), "--from-scratch", "--init-classes", "a"]) == 2
    assert "init_classes needs init_from" in capsys.readouterr().err


def test_recipe_flags_reach_the_config(root, tmp_path):
    args = train_detector.build_parser().parse_args([*tiny_args(root, tmp_path / "run"), "--from-scratch",
                                                     "--bias-lr-multiplier", "1", "--no-decay-l2-scales",
                                                     "--adam-epsilon", "0.1"])
    _, config = train_detector.resolve_configs(args)
    assert (config.bias_lr_multiplier, config.decay_l2_scales, config.adam_epsilon) == (1.0, False, 0.1)
    _, default = train_detector.resolve_configs(train_detector.build_parser().parse_args(tiny_args(root, tmp_path)))
    assert (default.bias_lr_multiplier, default.decay_l2_scales) == (2.0, True)
    assert json.loads(json.dumps(config.to_dict()))["adam_epsilon"] == 0.1


def test_fine_tuning_run_records_its_source_and_trains(root, tmp_path, capsys):
    import tensorflow as tf

    from ssd.modeling.model import build_model_from_config

    source = ModelConfig("vgg300", ("triangle", "square", "circle"), width=0.125)
    save_run_config(tmp_path / "source", source, TrainConfig())
    model = build_model_from_config(source)
    tf.train.CheckpointManager(tf.train.Checkpoint(model=model), str(tmp_path / "source" / "checkpoints"), 1).save()
    args = [*tiny_args(root, tmp_path / "run"), "--init-from", str(tmp_path / "source"),
            "--init-classes", "circle,square", "--iterations", "1", "--optimizer", "adam", "--adam-epsilon", "0.1"]
    assert train_detector.main(args) == 0
    assert "finished at step 1" in capsys.readouterr().out
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["model"]["width"] == 0.125 and saved["model"]["class_names"] == ["circle", "square"]
    assert saved["train"]["init_from"] == str(tmp_path / "source")
    assert saved["train"]["init_classes"] == ["circle", "square"] and saved["train"]["adam_epsilon"] == 0.1
