"""Issue 7 (part): clear one-line errors before training, and nothing of the user's is written or overwritten."""

import pytest
import torch
from conftest import TINY_TRAIN
from ultralytics import YOLO
from ultralytics.nn.tasks import DetectionModel, SegmentationModel

import yolo_kd
from yolo_kd import KDConfigError


def fake_checkpoint(path, model):
    torch.save({"model": model, "train_args": {}}, path)
    return path


def train_error(tmp_path, tiny_data, **kd):
    model = YOLO("yolov8n.yaml")
    yolo_kd.distill(model, **kd)
    with pytest.raises(KDConfigError) as e:
        model.train(data=str(tiny_data), epochs=1, project=str(tmp_path / "runs"), name="x", **TINY_TRAIN)
    return str(e.value)


@pytest.mark.parametrize("content, match", [(b"", "not a PyTorch checkpoint"), (b"hello", "not a PyTorch checkpoint")])
def test_not_a_checkpoint(tmp_path, content, match):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(content)
    with pytest.raises(KDConfigError, match=match):
        yolo_kd.distill(YOLO("yolov8n.yaml"), teacher=str(bad))


def test_truncated_checkpoint(tmp_path, tiny_data, tiny_teacher):
    cut = tmp_path / "cut.pt"
    cut.write_bytes(tiny_teacher.read_bytes()[: tiny_teacher.stat().st_size // 2])
    with pytest.raises(KDConfigError, match="not a PyTorch checkpoint|cannot be loaded"):
        yolo_kd.distill(YOLO("yolov8n.yaml"), teacher=str(cut))


def test_yaml_teacher_without_weights():
    with pytest.raises(KDConfigError, match="untrained teacher"):
        yolo_kd.distill(YOLO("yolov8n.yaml"), teacher="yolov8s.yaml")


def test_segment_teacher(tmp_path, tiny_data):
    seg = fake_checkpoint(tmp_path / "seg.pt", SegmentationModel("yolov8n-seg.yaml", nc=2, verbose=False))
    msg = train_error(tmp_path, tiny_data, teacher=str(seg))
    assert "'segment' model" in msg
    assert not list((tmp_path / "runs").rglob("*.pt"))  # failed before any checkpoint was written


def test_teacher_with_other_classes_and_class_map(tmp_path, tiny_data):
    t = DetectionModel("yolov8s.yaml", nc=3, verbose=False)
    t.names = {0: "disc", 1: "square", 2: "other"}
    other = fake_checkpoint(tmp_path / "other.pt", t)
    msg = train_error(tmp_path, tiny_data, teacher=str(other))
    assert "differ from the dataset" in msg and "class_map" in msg
    model = YOLO("yolov8n.yaml")  # an explicit mapping makes the same teacher usable
    yolo_kd.distill(model, teacher=str(other), method="pred", class_map={0: 1, 1: 0})
    model.train(data=str(tiny_data), epochs=1, project=str(tmp_path / "runs"), name="mapped", **TINY_TRAIN)
    assert model.trainer.model.class_index == {"teacher": [1, 0]}


def test_teacher_with_other_detect_levels(tmp_path, tiny_data):
    t = DetectionModel("yolov8s-p2.yaml", nc=2, verbose=False)
    t.names = {0: "square", 1: "disc"}
    p2 = fake_checkpoint(tmp_path / "p2.pt", t)
    msg = train_error(tmp_path, tiny_data, teacher=str(p2))
    assert "Detect levels" in msg and "layers=" in msg


@pytest.mark.parametrize("kwargs, match", [
    ({"method": "fgdx"}, "unknown method 'fgdx'"),
    ({"method": "fgd", "weights": {"fgd": -1}}, "must be >= 0"),
    ({"method": "fgd", "weights": {"pred": 1}}, "not in method"),
    ({"method": "fgd", "schedule": {"decay": "exp"}}, "decay='exp' is unknown"),
])
def test_bad_options(tiny_teacher, kwargs, match):
    with pytest.raises(KDConfigError, match=match):
        yolo_kd.distill(YOLO("yolov8n.yaml"), teacher=str(tiny_teacher), **kwargs)


@pytest.mark.parametrize("recipe, match", [
    ({"teachers": {"a": "x.pt"}, "stages": [], "colour": 1}, r"unknown key\(s\) \['colour'\]"),
    ({"teachers": {"a": "x.pt"}, "stages": [{"epochs": [0, 5], "teachers": ["a"], "methods": {"fgd": "big"}}]},
     "must be a number"),
    ({"teachers": {"a": "x.pt"}, "stages": [{"fraction": [0.5, 1.5], "teachers": ["a"], "methods": "fgd"}]},
     "out of range"),
    ({"teachers": {"a": "x.pt"}, "stages": [{"epochs": [0, 5], "teachers": ["b"], "methods": "fgd"}]},
     "not defined"),
    ({"teachers": {"a": "x.pt"}, "stages": [{"epochs": [0, 5], "teachers": ["a"], "methods": {"fgd": {"tmp": 1}}}]},
     r"no parameter\(s\) \['tmp'\]"),
])
def test_bad_recipes(recipe, match):
    with pytest.raises(KDConfigError, match=match):
        yolo_kd.distill(YOLO("yolov8n.yaml"), cfg=recipe)
