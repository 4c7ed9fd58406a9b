"""`val_command` end to end on the tiny trained student (real Ultralytics validation, real pycocotools)."""

import json
import shutil
from pathlib import Path

import pytest
import yaml

from yolo_kd.errors import KDConfigError
from yolo_kd.evaluation import STAT_NAMES, val_command


@pytest.fixture(scope="module")
def two_model_run(tiny_student_ckpt, tiny_data, tmp_path_factory):
    """One val_command call on two checkpoints (the student and a renamed copy)."""
    root = tmp_path_factory.mktemp("kd_val")
    copy = root / "distilled.pt"
    shutil.copyfile(tiny_student_ckpt, copy)
    return val_command({"model": f"{tiny_student_ckpt},{copy}", "data": str(tiny_data), "imgsz": "64",
                        "batch": "4", "project": str(root / "runs"), "name": "cmp"})


def test_files_and_stats(two_model_run):
    save_dir = Path(two_model_run["save_dir"])
    assert save_dir.name == "cmp" and save_dir.is_dir()
    gt = json.loads((save_dir / "coco_gt.json").read_text())
    assert len(gt["images"]) == 4 and {c["name"] for c in gt["categories"]} == {"square", "disc"}
    assert all({"id", "file_name", "width", "height"} <= set(im) for im in gt["images"])
    assert all(a["iscrowd"] == 0 and a["area"] > 0 for a in gt["annotations"])
    saved = json.loads((save_dir / "coco_metrics.json").read_text())
    assert list(saved["models"]) == ["student", "distilled"] == list(two_model_run["models"])
    for label, result in two_model_run["models"].items():
        predictions = json.loads(Path(result["predictions"]).read_text())
        assert Path(result["predictions"]).parent == save_dir / label
        assert all({"image_id", "category_id", "bbox", "score"} == set(p) for p in predictions)
        assert set(result["coco"]) == set(STAT_NAMES)
        assert all(v == -1 or 0.0 <= v <= 1.0 for v in result["coco"].values())
        assert 0.0 <= result["ultralytics"]["mAP50-95"] <= 1.0
        assert [c["name"] for c in result["per_class"]] == ["square", "disc"]
        assert result["run"]["imgsz"] == 64 and result["run"]["conf"] == 0.001
    a, b = two_model_run["models"].values()
    assert a["coco"] == b["coco"]  # same weights -> same numbers


def test_two_models_print_side_by_side(tiny_student_ckpt, tiny_data, tmp_path, capsys):
    copy = tmp_path / "baseline.pt"
    shutil.copyfile(tiny_student_ckpt, copy)
    val_command({"model": f"{tiny_student_ckpt},{copy}", "data": str(tiny_data), "imgsz": 64,
                 "project": str(tmp_path), "name": "side"})
    out = capsys.readouterr().out
    assert f"results saved to {tmp_path / 'side'}" in out
    header = next(line for line in out.splitlines() if line.startswith("pycocotools stat"))
    assert header.split()[-2:] == ["student", "baseline"]  # one table, one column per model
    assert out.count("pycocotools stat") == 1
    class_header = next(line for line in out.splitlines() if line.startswith("class"))
    assert "student AP50-95" in class_header and "baseline AP50-95" in class_header
    assert "Ultralytics mAP50-95" in out and "Why pycocotools and Ultralytics mAP50-95 differ" in out


def test_coco_json_input_maps_ids_back(tiny_student_ckpt, tiny_data, two_model_run, tmp_path):
    """The tiny val split as a COCO json with category ids 3 and 7: same detections, same mAP, ids mapped back."""
    gt = json.loads((Path(two_model_run["save_dir"]) / "coco_gt.json").read_text())
    ids = {1: 3, 2: 7}
    for c in gt["categories"]:
        c["id"] = ids[c["id"]]
    for a in gt["annotations"]:
        a["category_id"] = ids[a["category_id"]]
    root = yaml.safe_load(Path(tiny_data).read_text())["path"]
    ann = tmp_path / "instances_val.json"
    ann.write_text(json.dumps(gt))
    result = val_command({"model": str(tiny_student_ckpt), "data": str(ann), "images": f"{root}/images/val",
                          "imgsz": 64, "project": str(tmp_path), "name": "json"})
    (coco_run,) = result["models"].values()
    predictions = json.loads(Path(coco_run["predictions"]).read_text())
    assert {p["category_id"] for p in predictions} <= {3, 7}
    assert [c["category_id"] for c in coco_run["per_class"]] == [3, 7]
    yaml_run = two_model_run["models"]["student"]
    assert coco_run["coco"] == pytest.approx(yaml_run["coco"])
    assert coco_run["ultralytics"]["mAP50-95"] == pytest.approx(yaml_run["ultralytics"]["mAP50-95"])


def test_user_mistakes(tiny_student_ckpt, tiny_data, tmp_path):
    with pytest.raises(KDConfigError, match="model="):
        val_command({"model": str(tmp_path / "missing.pt"), "data": str(tiny_data)})
    with pytest.raises(KDConfigError, match="needs data="):
        val_command({"model": str(tiny_student_ckpt)})
    with pytest.raises(KDConfigError, match=r"unknown val option\(s\) \['epochs'\]"):
        val_command({"model": str(tiny_student_ckpt), "data": str(tiny_data), "epochs": 3})
    with pytest.raises(KDConfigError, match="conf="):
        val_command({"model": str(tiny_student_ckpt), "data": str(tiny_data), "conf": "high"})
    project = tmp_path / "runs"
    with pytest.raises(KDConfigError, match="does not exist"):
        val_command({"model": str(tiny_student_ckpt), "data": str(tmp_path / "nope.yaml"), "project": str(project)})
    broken = tmp_path / "broken.pt"
    broken.write_text("not a checkpoint")
    with pytest.raises(KDConfigError, match="cannot be loaded"):
        val_command({"model": f"{tiny_student_ckpt},{broken}", "data": str(tiny_data), "project": str(project)})
    assert not project.exists()  # mistakes are caught before the run folder is made
