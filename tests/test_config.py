"""Config objects: JSON round trips and validation."""

import json

import pytest

from ssd.config import COCO_DEFAULT_BOXES, DEFAULT_BOXES, DefaultBoxConfig, ModelConfig

from ssd.engine.recipe import RECIPES, TrainConfig


@pytest.mark.parametrize("preset", ["vgg300", "vgg512"])
def test_model_config_json_round_trip(tmp_path, preset):
    config = ModelConfig(preset, ("cat", "dog"), width=0.25)
    config.save(tmp_path / "model.json")
    loaded = ModelConfig.load(tmp_path / "model.json")
    assert loaded == config
    assert loaded.default_boxes == DEFAULT_BOXES[preset]
    assert loaded.num_classes == 3
    assert json.loads((tmp_path / "model.json").read_text())["class_names"] == ["cat", "dog"]


def test_mean_is_stored_and_defaults_to_the_ssd_references(tmp_path):
    config = ModelConfig("vgg300", ("cat",))
    assert config.mean_bgr == (104.0, 117.0, 123.0)
    config.save(tmp_path / "model.json")
    assert json.loads((tmp_path / "model.json").read_text())["mean_bgr"] == [104.0, 117.0, 123.0]
    custom = ModelConfig("vgg300", ("cat",), mean_bgr=(1, 2, 3.5))
    assert ModelConfig.from_dict(json.loads(json.dumps(custom.to_dict()))).mean_bgr == (1.0, 2.0, 3.5)


def test_config_written_before_the_mean_was_stored_keeps_its_training_mean(tmp_path):
    data = ModelConfig("vgg300", ("cat",)).to_dict()
    del data["mean_bgr"]
    (tmp_path / "model.json").write_text(json.dumps(data))
    # The Keras VGG-16 file's mean, which every model was trained with before.
    assert ModelConfig.load(tmp_path / "model.json").mean_bgr == (103.939, 116.779, 123.68)


def test_default_box_config_round_trip_keeps_tuples():
    config = DefaultBoxConfig.linear_scale(300, (38, 19), (8, 16), ((2,), (2, 3)))
    again = DefaultBoxConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config and hash(again) == hash(config)


def test_model_config_rejects_bad_input():
    with pytest.raises(ValueError, match="preset"):
        ModelConfig("resnet", ("a",))
    with pytest.raises(ValueError, match="duplicates"):
        ModelConfig("vgg300", ("a", "a"))
    with pytest.raises(ValueError, match="source maps"):
        ModelConfig("vgg300", ("a",), default_boxes=DEFAULT_BOXES["vgg512"])
    with pytest.raises(FileNotFoundError):
        ModelConfig.load("/nonexistent/model.json")
    with pytest.raises(ValueError, match=r"mean_bgr must be 3 finite numbers.*\(1, 2\)"):
        ModelConfig("vgg300", ("a",), mean_bgr=(1, 2))


def test_coco_default_boxes_are_the_caffe_releases():
    """ssd_coco.py: min_ratio 15 (300) / 10 (512), max_ratio 90, step floor((max - min) / (m - 2)),
    first level at half the min ratio (300: 7%) or 4% (512); sizes = ratio% of the input."""
    def caffe(size, min_ratio, first, m):
        step = (90 - min_ratio) // (m - 2)
        ratios = list(range(min_ratio, 91 + step, step))[: m]  # m - 1 levels plus the last max
        mins = [size * first / 100] + [size * r / 100 for r in ratios[: m - 1]]
        maxs = [size * min_ratio / 100] + [size * (r + step) / 100 for r in ratios[: m - 1]]
        return mins, maxs

    for preset, size, min_ratio, first, m in (("vgg300", 300, 15, 7, 6), ("vgg512", 512, 10, 4, 7)):
        mins, maxs = caffe(size, min_ratio, first, m)
        boxes = COCO_DEFAULT_BOXES[preset]
        assert boxes.min_sizes == pytest.approx(mins) and boxes.max_sizes == pytest.approx(maxs)
        voc = DEFAULT_BOXES[preset]
        assert (boxes.steps, boxes.aspect_ratios, boxes.num_boxes) == (voc.steps, voc.aspect_ratios, voc.num_boxes)
    assert COCO_DEFAULT_BOXES["vgg300"].min_sizes == (21, 45, 99, 153, 207, 261)
    assert COCO_DEFAULT_BOXES["vgg300"].max_sizes == (45, 99, 153, 207, 261, 315)


def test_coco_model_config_round_trip_and_old_configs_load(tmp_path):
    names = tuple(f"c{k}" for k in range(80))
    ids = tuple(k for k in range(1, 91) if k not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83))  # COCO's gaps
    config = ModelConfig("vgg512", names, boxes="coco", category_ids=ids)
    assert config.default_boxes == COCO_DEFAULT_BOXES["vgg512"] and config.num_classes == 81
    config.save(tmp_path / "model.json")
    written = json.loads((tmp_path / "model.json").read_text())
    assert written["boxes"] == "coco" and written["category_ids"][-1] == 90
    assert ModelConfig.load(tmp_path / "model.json") == config
    old = {k: v for k, v in ModelConfig("vgg300", ("a",)).to_dict().items() if k not in ("boxes", "category_ids")}
    assert ModelConfig.from_dict(old) == ModelConfig("vgg300", ("a",))
    with pytest.raises(ValueError, match="boxes must be one of"):
        ModelConfig("vgg300", ("a",), boxes="kitti")
    with pytest.raises(ValueError, match="one unique id per class"):
        ModelConfig("vgg300", ("a", "b"), category_ids=(3,))


def test_train_config_recipes_and_metric():
    coco = TrainConfig(**RECIPES["coco"])
    assert (coco.iterations, coco.boundaries, coco.eval_metric) == (400_000, (280_000, 360_000), "coco")
    assert TrainConfig(**RECIPES["voc"]) == TrainConfig()  # the defaults are the VOC recipe
    assert TrainConfig.from_dict(json.loads(json.dumps(coco.to_dict()))) == coco
    with pytest.raises(ValueError, match="eval_metric must be one of"):
        TrainConfig(eval_metric="map")
    with pytest.raises(ValueError, match="data_format must be one of"):
        TrainConfig(data_format="kitti")


def test_train_config_records_the_caffe_recipe_and_round_trips():
    config = TrainConfig(init_from="runs/voc", init_classes=("person", "car"), adam_epsilon=0.1)
    assert (config.bias_lr_multiplier, config.decay_l2_scales) == (2.0, True)  # the paper's recipe by default
    again = TrainConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config and again.init_classes == ("person", "car")


def test_train_config_of_an_older_run_keeps_what_it_was_trained_with():
    old = TrainConfig().to_dict()
    for name in ("bias_lr_multiplier", "decay_l2_scales", "adam_epsilon", "init_from", "init_classes"):
        del old[name]
    loaded = TrainConfig.from_dict(old)
    assert (loaded.bias_lr_multiplier, loaded.decay_l2_scales, loaded.adam_epsilon) == (1.0, False, 1e-7)
    assert loaded.init_from is None and loaded.init_classes is None


def test_train_config_rejects_bad_recipe_options():
    with pytest.raises(ValueError, match="bias_lr_multiplier must be positive"):
        TrainConfig(bias_lr_multiplier=0.0)
    with pytest.raises(ValueError, match="adam_epsilon must be positive"):
        TrainConfig(adam_epsilon=-1.0)
    with pytest.raises(ValueError, match="init_classes needs init_from"):
        TrainConfig(init_classes=("person",))
