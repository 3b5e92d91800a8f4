"""The README's main command, in its --quick form: every stage runs and leaves its artefact."""

import json
import re

import cv2
import pytest

from ssd.cli import demo


@pytest.mark.slow
def test_quick_demo_leaves_every_artefact(tmp_path, capsys):
    assert demo.main(["--quick", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    metrics = json.loads((tmp_path / "evaluation" / "metrics.json").read_text())
    assert metrics["confidence_levels"] == [0.01, 0.1, 0.3, 0.5]
    assert len(metrics["map_voc07"]) == 4 and "VOC07 mAP on the synthetic test split" in out
    assert (tmp_path / "evaluation" / "pr_curves.png").stat().st_size > 0
    assert len(list((tmp_path / "evaluation" / "results").glob("comp4_det_test_*.txt"))) == 6
    assert (tmp_path / "export" / "frozen_inference_graph.pb").stat().st_size > 0
    assert (tmp_path / "run" / "config.json").is_file()
    source = cv2.VideoCapture(str(tmp_path / "video" / "shapes.mp4"))
    annotated = cv2.VideoCapture(str(tmp_path / "video" / "annotated" / "shapes.mp4"))
    for prop in (cv2.CAP_PROP_FRAME_COUNT, cv2.CAP_PROP_FRAME_WIDTH, cv2.CAP_PROP_FRAME_HEIGHT, cv2.CAP_PROP_FPS):
        assert annotated.get(prop) == source.get(prop)
    lines = (tmp_path / "video" / "annotated" / "shapes.jsonl").read_text().splitlines()
    assert len(lines) == int(source.get(cv2.CAP_PROP_FRAME_COUNT)) == 12
    int8 = cv2.VideoCapture(str(tmp_path / "video" / "annotated_int8" / "shapes.mp4"))
    assert int8.get(cv2.CAP_PROP_FRAME_COUNT) == 12 and (tmp_path / "export" / "model_int8.xml").is_file()
    assert re.search(r"INT8 check: VOC07 mAP .*\n +openvino +fp32 .* int8 .* change", out)
    assert re.search(r"video FPS .*TensorFlow fp32 \(frozen graph\) \d+\.\d, OpenVINO INT8 \d+\.\d", out)
    assert (tmp_path / "video" / "shapes_gt.txt").stat().st_size > 0
    assert (tmp_path / "video" / "annotated" / "mot" / "shapes.txt").is_file()
    assert re.search(r"tracking the video, TensorFlow fp32 .*\n +HOTA [\d.]+ +MOTA -?[\d.]+ +IDF1 [\d.]+", out)
