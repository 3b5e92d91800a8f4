"""ssd/modeling/finetune.py: a slim trained-looking source run, and models initialised from it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from ssd.config import ModelConfig

from ssd.engine.recipe import TrainConfig
from ssd.modeling.finetune import finetune_model_config, init_from_run, subsample_class_head
from ssd.modeling.model import build_model_from_config
from ssd.modeling.run_dir import save_run_config

SOURCE_CLASSES = ("star", "circle", "triangle", "square")
WIDTH = 0.125


@pytest.fixture(scope="module")
def source_run(tmp_path_factory) -> tuple[Path, object]:
    """A vgg300 run of width 0.125 whose every weight (biases too) is random, and its model."""
    run = tmp_path_factory.mktemp("source")
    config = ModelConfig("vgg300", SOURCE_CLASSES, width=WIDTH)
    model = build_model_from_config(config)
    rng = np.random.default_rng(0)
    for variable in model.weights:
        spread = 0.5 if "bias" in variable.path else 0.2
        variable.assign(rng.normal(0.0, spread, variable.shape).astype(np.float32))
    save_run_config(run, config, TrainConfig().to_dict())
    tf.train.CheckpointManager(tf.train.Checkpoint(model=model), str(run / "checkpoints"), 1).save()
    return run, model


def image() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (1, 300, 300, 3), np.uint8)


def outputs(model) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in model(image(), training=False).items()}


def test_subsampled_model_starts_with_the_source_logits_of_the_kept_classes(source_run):
    run, source = source_run
    config = finetune_model_config(ModelConfig("vgg300", SOURCE_CLASSES, width=WIDTH), ("tri", "circ"))
    model = build_model_from_config(config)
    init = init_from_run(model, config, run, init_classes=("triangle", "circle"), checkpoint="latest")
    assert init.class_rows == (0, 3, 2) and len(init.subsampled) == 6 and not init.reinitialised
    got, want = outputs(model), outputs(source)
    assert got["class_logits"].shape == (1, 8732, 3)
    # New class 1 is the source's triangle (3), class 2 its circle (2); background stays 0.
    np.testing.assert_allclose(got["class_logits"], want["class_logits"][..., [0, 3, 2]], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got["box_deltas"], want["box_deltas"], rtol=1e-5, atol=1e-5)
    assert np.abs(want["class_logits"]).max() > 1.0  # the comparison is not between near-zero values


def test_reinitialised_heads_keep_everything_else(source_run):
    run, source = source_run
    config = ModelConfig("vgg300", ("a", "b"), width=WIDTH)
    model = build_model_from_config(config)
    fresh = {w.path: w.numpy() for w in model.weights}
    init = init_from_run(model, config, run, checkpoint="latest")
    assert len(init.reinitialised) == 6 and not init.subsampled and init.class_rows == ()
    trained = {w.path: w.numpy() for w in source.weights}
    for variable in model.weights:
        want = fresh if "_mbox_conf" in variable.path else trained  # class heads left as initialised
        np.testing.assert_array_equal(variable.numpy(), want[variable.path], err_msg=variable.path)
    np.testing.assert_allclose(outputs(model)["box_deltas"], outputs(source)["box_deltas"], rtol=1e-5, atol=1e-5)


def test_subsample_class_head_by_hand():
    # 2 box types x 3 classes (background, a, b): channels [bg0 a0 b0 bg1 a1 b1]; keep bg and b.
    kernel = np.arange(12, dtype=np.float32).reshape(1, 1, 2, 6)
    bias = np.array([10, 11, 12, 13, 14, 15], np.float32)
    k, b = subsample_class_head(kernel, bias, 3, (0, 2))
    np.testing.assert_array_equal(b, [10, 12, 13, 15])
    np.testing.assert_array_equal(k[0, 0], [[0, 2, 3, 5], [6, 8, 9, 11]])


def test_unknown_classes_are_named_with_the_available_ones(source_run):
    run, _ = source_run
    config = ModelConfig("vgg300", ("x", "y"), width=WIDTH)
    with pytest.raises(ValueError, match=r"\['person', 'car'\] are not classes.*'star', 'circle'"):
        init_from_run(build_model_from_config(config), config, run, init_classes=("person", "car"))


def test_class_count_must_match_the_data(source_run):
    run, _ = source_run
    config = ModelConfig("vgg300", ("x", "y", "z"), width=WIDTH)
    with pytest.raises(ValueError, match="names 2 source classes.*the data has 3"):
        init_from_run(build_model_from_config(config), config, run, init_classes=("star", "circle"))


@pytest.mark.parametrize("preset, width, what", [("vgg512", WIDTH, "preset"), ("vgg300", 0.25, "width")])
def test_a_source_of_another_preset_or_width_is_refused(source_run, preset, width, what):
    run, _ = source_run
    config = ModelConfig(preset, ("x",), width=width)
    with pytest.raises(ValueError, match=f"source run has {what} .*fine-tuning needs the same {what}"):
        init_from_run(build_model_from_config(config), config, run)


def test_a_training_run_starts_from_the_sub_sampled_source(source_run, tmp_path):
    """The Trainer's hook: before any step its model gives the source's logits of the named classes."""
    from ssd_datasets.synthetic import generate_synthetic_voc, load_synthetic
    from ssd.engine.trainer import Trainer

    run, source = source_run
    generate_synthetic_voc(tmp_path / "data", num_train=4, num_test=0, image_size_range=(64, 64))
    train_set = load_synthetic(tmp_path / "data")
    config = finetune_model_config(ModelConfig("vgg300", SOURCE_CLASSES, width=WIDTH), train_set.class_names[:2])
    train_config = TrainConfig(init_from=str(run), init_classes=("square", "star"), batch_size=2, workers=1)
    trainer = Trainer(config, train_config, tmp_path / "run", train_set)
    got, want = outputs(trainer.state.model), outputs(source)
    np.testing.assert_allclose(got["class_logits"], want["class_logits"][..., [0, 4, 1]], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got["box_deltas"], want["box_deltas"], rtol=1e-5, atol=1e-5)
