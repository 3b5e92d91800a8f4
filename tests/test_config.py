"""Config objects: JSON round trips and validation."""

import json

import pytest

from ssd.config import DEFAULT_BOXES, DefaultBoxConfig, ModelConfig


@pytest.mark.parametrize("preset", ["vgg300", "vgg512"])
def test_model_config_json_round_trip(tmp_path, preset):
    config = ModelConfig(preset, ("cat", "dog"), width=0.25)
    config.save(tmp_path / "model.json")
    loaded = ModelConfig.load(tmp_path / "model.json")
    assert loaded == config
    assert loaded.default_boxes == DEFAULT_BOXES[preset]
    assert loaded.num_classes == 3
    assert json.loads((tmp_path / "model.json").read_text())["class_names"] == ["cat", "dog"]


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
