"""The training loop end to end on a small synthetic set: it learns, resumes, stops on NaN, logs.

One slim vgg300 run is trained once per module (`trained`) and copied by the tests that go on
from it, so the expensive part is paid once.
"""

from __future__ import annotations

import dataclasses
import math
import re
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from ssd_datasets.synthetic import generate_synthetic_voc, load_synthetic
from ssd.config import ModelConfig
from ssd.engine.recipe import TrainConfig
from ssd.engine.run_config import load_run_config
from ssd.engine.trainer import NonFiniteLossError, Trainer, steps_per_epoch
from ssd.records import DetectionDataset, Sample

STEPS = 300  # 30 epochs of 10 batches: ~4800 images, about two minutes on two cores
BATCHES_PER_EPOCH = 10
E2E = TrainConfig(data_root="", train_splits=("trainval",), val_splits=("test",), batch_size=16,
                  iterations=STEPS, optimizer="adam", learning_rate=3e-3, schedule="cosine",
                  warmup_steps=50, from_scratch=True, expand_probability=0.0, workers=2,
                  checkpoint_every=100, eval_every=1000, seed=0)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """160 train / 48 test synthetic images of 300..400 pixels."""
    root = tmp_path_factory.mktemp("synthetic")
    generate_synthetic_voc(root, num_train=160, num_test=48, seed=3, image_size_range=(300, 400))
    return root, load_synthetic(root, "trainval"), load_synthetic(root, "test")


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """(run_dir, config, fit result, mAP of the untrained model) of one short run."""
    root, train_set, test_set = data
    run_dir = tmp_path_factory.mktemp("run")
    config = dataclasses.replace(E2E, data_root=str(root))
    model_config = ModelConfig("vgg300", train_set.class_names, width=0.125)
    keras.utils.set_random_seed(0)
    trainer = Trainer(model_config, config, run_dir, train_set, test_set)
    untrained = trainer.evaluate(test_set)["map_voc07"][0]
    result = trainer.fit(progress=False)
    return run_dir, config, result, untrained


def copy_run(run_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(run_dir, target)
    return target


def cosine_rate(step: int, config: TrainConfig, total: int) -> float:
    """The schedule written out independently: linear warmup times half a cosine to 0."""
    ramp = min((step + 1) / config.warmup_steps, 1.0)
    return config.learning_rate * 0.5 * (1 + math.cos(math.pi * min(step / total, 1.0))) * ramp


@pytest.mark.slow
def test_training_raises_map_well_above_the_untrained_model(trained):
    run_dir, config, result, untrained = trained
    assert result.step == STEPS and not result.interrupted
    assert result.epoch == STEPS // BATCHES_PER_EPOCH
    # Chance is ~0 (the untrained model scores ~0.001); this short run reaches ~0.2 and the
    # README's 15-epoch demo ~0.89.
    assert untrained < 0.02
    assert result.best_map >= 0.1, result.history[-1]
    first, last = result.history[0], result.history[-1]
    assert last["total_loss"] < 0.6 * first["total_loss"]
    assert last["learning_rate"] == pytest.approx(0.0, abs=1e-9)  # the cosine ended
    assert (run_dir / "best" / "best.json").is_file()
    assert Path(tf.train.latest_checkpoint(str(run_dir / "checkpoints"))).name == f"ckpt-{STEPS}"
    assert load_run_config(run_dir)[1] == config
    assert len((run_dir / "train.log").read_text().splitlines()) == len(result.history)


@pytest.mark.slow
def test_summaries_hold_losses_rate_map_and_images(trained):
    run_dir = trained[0]
    tags = set()
    for path in (run_dir / "logs").iterdir():
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            tags.update(v.tag for v in event.summary.value)
    assert {"loss/total_loss", "loss/confidence_loss", "loss/localization_loss",
            "loss/regularization_loss", "learning_rate", "images_per_second",
            "eval/mAP_voc07", "eval/mAP_voc10", "eval_ap/circle"} <= tags
    assert any(t.startswith("eval/detections") for t in tags)


@pytest.mark.slow
def test_resume_continues_step_count_and_schedule(trained, data, tmp_path):
    run_dir, config, result, _ = trained
    _, train_set, _ = data
    run_dir = copy_run(run_dir, tmp_path)
    model_config, _ = load_run_config(run_dir)
    longer = dataclasses.replace(config, iterations=2 * STEPS)
    trainer = Trainer(model_config, longer, run_dir, train_set)
    assert trainer.step == STEPS and trainer.completed_epochs == STEPS // BATCHES_PER_EPOCH
    # the rate of step STEPS + 1 is the (longer) schedule's value there, not a restarted warmup
    expected = cosine_rate(STEPS, longer, 2 * STEPS)
    assert trainer.learning_rate == pytest.approx(expected, rel=1e-5)
    assert expected > 10 * cosine_rate(0, longer, 2 * STEPS)
    trainer = Trainer(model_config, dataclasses.replace(config, iterations=STEPS + 6), run_dir, train_set)
    resumed = trainer.fit(progress=False)
    assert resumed.step == STEPS + 6
    assert [h["epoch"] for h in resumed.history] == [STEPS // BATCHES_PER_EPOCH + 1]
    assert tf.train.latest_checkpoint(str(run_dir / "checkpoints")).endswith(f"ckpt-{STEPS + 6}")


@pytest.mark.slow
def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(trained, data, tmp_path):
    run_dir, config, _, _ = trained
    _, train_set, _ = data
    run_dir = copy_run(run_dir, tmp_path)
    model_config, _ = load_run_config(run_dir)
    saved = tf.train.latest_checkpoint(str(run_dir / "checkpoints"))
    exploding = dataclasses.replace(config, iterations=STEPS + 20, learning_rate=1e12, schedule="constant",
                                    warmup_steps=0, checkpoint_every=1)
    trainer = Trainer(model_config, exploding, run_dir, train_set)
    with pytest.raises(NonFiniteLossError) as info:
        trainer.fit(progress=False)
    message = str(info.value)
    step = int(re.search(r"at step (\d+)", message).group(1))
    assert STEPS < step <= STEPS + 20
    latest = tf.train.latest_checkpoint(str(run_dir / "checkpoints"))
    assert latest in message
    assert int(latest.rsplit("-", 1)[1]) < step  # nothing was saved at or after the bad step
    # the named checkpoint restores, with finite weights; the one before the run is unchanged
    for path in {latest, saved}:
        model = keras.models.clone_model(trainer.model)
        tf.train.Checkpoint(model=model).restore(path).expect_partial()
        assert all(np.isfinite(w).all() for w in model.get_weights())
    reader = tf.train.load_checkpoint(saved)
    assert reader.get_tensor("optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE") == STEPS


def unread_dataset(size: int) -> DetectionDataset:
    """`size` samples whose images do not exist: constructing a trainer must not read them."""
    return DetectionDataset(("a",), tuple(Sample(str(i), f"/nonexistent/{i}.jpg", 10, 10) for i in range(size)))


def test_too_small_training_split_is_refused(tmp_path):
    config = TrainConfig(batch_size=32, from_scratch=True)
    with pytest.raises(ValueError, match="fewer than one batch of 32"):
        Trainer(ModelConfig("vgg300", ("a",), width=0.125), config, tmp_path, unread_dataset(31))
    assert steps_per_epoch(65, 32) == 2


def test_missing_vgg_weights_are_refused_unless_from_scratch(tmp_path):
    with pytest.raises(ValueError, match="--base-weights"):
        Trainer(ModelConfig("vgg300", ("a",), width=0.125), TrainConfig(), tmp_path, unread_dataset(32))


def test_only_a_range_test_trainer_takes_a_set_rate_and_construction_writes_nothing(tmp_path):
    from ssd.engine.lr_finder import lr_range_test

    model_config, config = ModelConfig("vgg300", ("a",), width=0.125), TrainConfig(batch_size=2, from_scratch=True)
    trainer = Trainer(model_config, config, tmp_path / "run", unread_dataset(4))
    with pytest.raises(ValueError, match="range_test=True"):
        trainer.set_learning_rate(0.25)
    with pytest.raises(ValueError, match="range_test=True"):
        lr_range_test(trainer, tmp_path / "out")
    ranged = Trainer(model_config, config, tmp_path / "run", unread_dataset(4), range_test=True)
    ranged.set_learning_rate(0.25)
    assert ranged.learning_rate == 0.25
    assert not (tmp_path / "run").exists() and not (tmp_path / "out").exists()


def test_expanded_canvases_are_filled_with_the_models_own_mean(tmp_path):
    model_config = ModelConfig("vgg300", ("a",), width=0.125, mean_bgr=(10.0, 20.0, 30.0))
    config = TrainConfig(batch_size=2, from_scratch=True, expand_probability=1.0)
    transform = Trainer(model_config, config, tmp_path / "run", unread_dataset(4)).train_transform()
    assert transform.mean_rgb == (30.0, 20.0, 10.0)


def test_an_image_that_no_longer_decodes_is_skipped_and_counted_unless_strict(data, tmp_path):
    from ssd.data.pipeline import PipelineError

    root, train_set, _ = data
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(Path(train_set.samples[0].image_path).read_bytes()[:2] + b"\x00" * 64)  # passed the load
    samples = (dataclasses.replace(train_set.samples[0], image_path=str(broken)), *train_set.samples[1:4])
    small = DetectionDataset(train_set.class_names, samples)
    config = dataclasses.replace(E2E, data_root=str(root), batch_size=4, iterations=2, workers=1, eval_every=0)
    model_config = ModelConfig("vgg300", train_set.class_names, width=0.125)
    with pytest.warns(RuntimeWarning, match=r"skipped image .*broken\.jpg"):
        result = Trainer(model_config, config, tmp_path / "run", small).fit(progress=False)
    assert result.step == 2 and [h["skipped_images"] for h in result.history] == [1, 1]
    assert "skipped 1 undecodable images" in (tmp_path / "run" / "train.log").read_text()
    strict = dataclasses.replace(config, strict=True)
    with pytest.raises(PipelineError, match=r"broken\.jpg"):
        Trainer(model_config, strict, tmp_path / "strict", small).fit(progress=False)
