"""Pascal VOC converters (NEU-DET, GC10-DET, PlantDoc) on hand-written XML + tiny images, and `yolo-kd data`."""

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from yolo_kd.data import (GC10_NAMES, NEU_NAMES, convert_gc10_det, convert_neu_det, convert_plantdoc, data_command,
                          parse_voc_xml)
from yolo_kd.data.gc10 import gc10_class
from yolo_kd.data.neu import neu_class
from yolo_kd.errors import KDConfigError

os.environ.setdefault("YOLO_OFFLINE", "1")


def write_voc(xml: Path, filename: str, size, objects, image: Path = None, image_size=None):
    """Write a VOC XML (objects: (name, xmin, ymin, xmax, ymax)) and, when image is given, a grey image."""
    xml.parent.mkdir(parents=True, exist_ok=True)
    objs = "".join(f"<object><name>{n}</name><pose>Unspecified</pose><truncated>0</truncated><difficult>0</difficult>"
                   f"<bndbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax><ymax>{d}</ymax></bndbox></object>"
                   for n, a, b, c, d in objects)
    size_xml = f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>" if size else ""
    xml.write_text(f"<annotation><folder>x</folder><filename>{filename}</filename>{size_xml}"
                   f"<segmented>0</segmented>{objs}</annotation>")
    if image is not None:
        w, h = image_size or size
        image.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(image), np.full((h, w, 3), 90, np.uint8))


def read_labels(root: Path, split: str) -> dict:
    return {p.stem: p.read_text().splitlines() for p in sorted((root / "labels" / split).glob("*.txt"))}


def read_names(data: Path) -> list:
    import yaml

    cfg = yaml.safe_load(data.read_text())
    return [cfg["names"][i] for i in range(len(cfg["names"]))]


# ------------------------------------------------------------------------------------------------------- parser
def test_parse_voc_xml(tmp_path):
    xml = tmp_path / "a.xml"
    write_voc(xml, "a.jpg", (200, 100), [("crazing", 1, 2, 50, 60), ("scratches", 10.5, 20, 30, 40)])
    ann = parse_voc_xml(xml)
    assert (ann.filename, ann.width, ann.height, len(ann.objects)) == ("a.jpg", 200, 100, 2)
    assert ann.objects[0].box() == (0.0, 1.0, 50.0, 60.0)
    assert ann.objects[1].box(one_based=False) == (10.5, 20.0, 30.0, 40.0)


@pytest.mark.parametrize("text", ["<annotation><object>", "<annotation><object><name>a</name><bndbox><xmin>x</xmin>"
                                  "<ymin>1</ymin><xmax>2</xmax><ymax>3</ymax></bndbox></object></annotation>"])
def test_parse_bad_xml_raises(tmp_path, text):
    (tmp_path / "bad.xml").write_text(text)
    with pytest.raises(KDConfigError, match="bad.xml"):
        parse_voc_xml(tmp_path / "bad.xml")


# ------------------------------------------------------------------------------------------------------ NEU-DET
def test_neu_class_names_normalised():
    assert [neu_class(n) for n in NEU_NAMES] == list(range(6))
    assert neu_class("Rolled-in Scale") == neu_class("rolled_in_scale") == neu_class("RS") == 4
    assert neu_class("Pitted Surface") == 3 and neu_class("PS") == 3
    assert neu_class("oil_spot") is None


def _neu_original(src: Path, per_class: int = 5):
    for cls, name in enumerate(NEU_NAMES):
        for i in range(1, per_class + 1):
            stem = f"{name}_{i}"
            write_voc(src / "ANNOTATIONS" / f"{stem}.xml", stem, (200, 200),
                      [(name.upper().replace("_", " "), 1, 1, 100, 50), (name, 101, 151, 200, 200)],
                      src / "IMAGES" / f"{stem}.jpg")


def test_neu_det_original_layout(tmp_path):
    src = tmp_path / "NEU-DET"
    _neu_original(src)
    data = convert_neu_det(src, tmp_path / "out", val_fraction=0.2, seed=0)
    root = data.parent
    assert read_names(data) == list(NEU_NAMES)
    train, val = read_labels(root, "train"), read_labels(root, "val")
    assert len(train) == 24 and len(val) == 6  # 1 of 5 per class in val (stratified)
    assert sorted(k.rsplit("_", 1)[0] for k in val) == sorted(NEU_NAMES)
    for stem, lines in {**train, **val}.items():
        cls = NEU_NAMES.index(stem.rsplit("_", 1)[0])
        assert lines == [f"{cls} 0.250000 0.125000 0.500000 0.250000", f"{cls} 0.750000 0.875000 0.500000 0.250000"]
        split = "train" if stem in train else "val"
        assert (root / "images" / split / f"{stem}.jpg").is_file()
    # deterministic: the same seed gives the same split, another seed another one
    again = convert_neu_det(src, tmp_path / "again", seed=0).parent
    other = convert_neu_det(src, tmp_path / "other", seed=1).parent
    assert read_labels(again, "val").keys() == val.keys()
    assert read_labels(other, "val").keys() != val.keys()


def test_neu_det_kaggle_layout_keeps_split(tmp_path):
    src = tmp_path / "NEU-DET"
    for split, stems in (("train", ["crazing_1", "patches_7"]), ("validation", ["scratches_3"])):
        for stem in stems:
            cls_name = stem.rsplit("_", 1)[0]
            write_voc(src / split / "annotations" / f"{stem}.xml", f"{stem}.jpg", (200, 200),
                      [(cls_name, 51, 1, 150, 200)], src / split / "images" / cls_name / f"{stem}.jpg")
    root = convert_neu_det(src, tmp_path / "out").parent
    assert read_labels(root, "train") == {"crazing_1": ["0 0.500000 0.500000 0.500000 1.000000"],
                                          "patches_7": ["2 0.500000 0.500000 0.500000 1.000000"]}
    assert read_labels(root, "val") == {"scratches_3": ["5 0.500000 0.500000 0.500000 1.000000"]}


def test_neu_det_unknown_class_and_bad_src(tmp_path):
    src = tmp_path / "NEU-DET"
    _neu_original(src, per_class=1)
    write_voc(src / "ANNOTATIONS" / "odd_1.xml", "odd_1.jpg", (200, 200), [("rust", 1, 1, 5, 5)],
              src / "IMAGES" / "odd_1.jpg")
    with pytest.raises(KDConfigError, match="rust"):
        convert_neu_det(src, tmp_path / "out")
    with pytest.raises(KDConfigError, match="src="):
        convert_neu_det(tmp_path / "missing", tmp_path / "out2")
    (tmp_path / "empty").mkdir()
    with pytest.raises(KDConfigError, match="xml"):
        convert_neu_det(tmp_path / "empty", tmp_path / "out3")
    with pytest.raises(KDConfigError, match="val_fraction"):
        convert_neu_det(src, tmp_path / "out4", val_fraction=1.5)


# ----------------------------------------------------------------------------------------------------- GC10-DET
def test_gc10_class_names():
    assert [gc10_class(f"{i + 1}_{p}") for i, p in enumerate(
        ["chongkong", "hanfeng", "yueyawan", "shuiban", "youban", "siban", "yiwu", "yahen", "zhehen", "yaozhe"])] \
        == list(range(10))
    assert gc10_class("10_yaozhed") == 9 and gc10_class("punching hole") == 0 and gc10_class("Waist_Folding") == 9
    assert gc10_class("d") is None and gc10_class("3_chongkong") is None


def test_gc10_det_layout(tmp_path):
    src = tmp_path / "GC10-DET"
    objects = {"img_01_0001": [("1_chongkong", 1, 1, 50, 25)],
               "img_02_0002": [("2_hanfeng", 51, 26, 100, 50), ("d", 1, 1, 3, 3)],
               "img_10_0003": [("10_yaozhed", 1, 1, 100, 50)],
               "img_10_0004": [("10_yaozhe", 26, 1, 75, 50)]}
    for stem, objs in objects.items():
        folder = str(int(stem.split("_")[1]))
        write_voc(src / "lable" / f"{stem}.xml", f"{stem}.jpg", (100, 50), objs, src / folder / f"{stem}.jpg")
    data = convert_gc10_det(src, tmp_path / "out", val_fraction=0.5, seed=0)
    assert read_names(data) == list(GC10_NAMES)
    labels = {**read_labels(data.parent, "train"), **read_labels(data.parent, "val")}
    assert labels == {"img_01_0001": ["0 0.250000 0.250000 0.500000 0.500000"],
                      "img_02_0002": ["1 0.750000 0.750000 0.500000 0.500000"],  # corrupt "d" skipped
                      "img_10_0003": ["9 0.500000 0.500000 1.000000 1.000000"],
                      "img_10_0004": ["9 0.500000 0.500000 0.500000 1.000000"]}
    assert len(read_labels(data.parent, "val")) >= 1 and len(read_labels(data.parent, "train")) >= 1


# ----------------------------------------------------------------------------------------------------- PlantDoc
def _plantdoc(src: Path):
    write_voc(src / "TRAIN" / "leaf a.xml", "leaf a.jpg", (100, 100), [("Tomato leaf", 1, 1, 50, 50)],
              src / "TRAIN" / "leaf a.jpg")
    # XML size twice the real image: boxes are rescaled to the real 100 x 50 image
    write_voc(src / "TRAIN" / "leaf b.xml", "leaf b.jpg", (200, 100), [(" Apple Scab Leaf ", 1, 1, 100, 100)],
              src / "TRAIN" / "leaf b.jpg", image_size=(100, 50))
    write_voc(src / "TEST" / "leaf c.xml", "leaf c.jpg", None, [("Tomato leaf", 51, 51, 100, 100)],
              src / "TEST" / "leaf c.jpg", image_size=(100, 100))


def test_plantdoc_collects_sorted_classes(tmp_path):
    src = tmp_path / "PlantDoc"
    _plantdoc(src)
    data = convert_plantdoc(src, tmp_path / "out")
    assert read_names(data) == ["Apple Scab Leaf", "Tomato leaf"]
    assert read_labels(data.parent, "train") == {"leaf a": ["1 0.250000 0.250000 0.500000 0.500000"],
                                                 "leaf b": ["0 0.250000 0.500000 0.500000 1.000000"]}
    assert read_labels(data.parent, "val") == {"leaf c": ["1 0.750000 0.750000 0.500000 0.500000"]}
    assert (data.parent / "images" / "val" / "leaf c.jpg").is_file()


def test_plantdoc_given_names(tmp_path):
    src = tmp_path / "PlantDoc"
    _plantdoc(src)
    data = convert_plantdoc(src, tmp_path / "out", names="Tomato leaf, Apple Scab Leaf, Corn rust leaf")
    assert read_names(data) == ["Tomato leaf", "Apple Scab Leaf", "Corn rust leaf"]
    assert read_labels(data.parent, "train")["leaf a"] == ["0 0.250000 0.250000 0.500000 0.500000"]
    with pytest.raises(KDConfigError, match="Apple Scab Leaf"):
        convert_plantdoc(src, tmp_path / "out2", names=["Tomato leaf"])


def test_check_det_dataset_loads_converted(tmp_path):
    from ultralytics.data.utils import check_det_dataset

    from yolo_kd.offline import install_local_fonts

    install_local_fonts()
    src = tmp_path / "PlantDoc"
    _plantdoc(src)
    info = check_det_dataset(str(convert_plantdoc(src, tmp_path / "out")))
    assert info["nc"] == 2 and Path(info["val"]).is_dir()


# ------------------------------------------------------------------------------------------------ yolo-kd data
def test_data_command_dispatch(tmp_path, capsys):
    data = data_command({"dataset": "steel", "root": str(tmp_path / "s"), "n_train": "3", "n_val": 2, "imgsz": 96,
                         "seed": "1", "overwrite": "True"})
    assert data == (tmp_path / "s" / "data.yaml").resolve() and data.is_file()
    assert len(list((tmp_path / "s" / "images" / "train").glob("*.jpg"))) == 3
    assert str(data) in capsys.readouterr().out
    src = tmp_path / "NEU-DET"
    _neu_original(src, per_class=2)
    data = data_command({"dataset": "neu_det", "src": str(src), "root": str(tmp_path / "n")})
    assert read_names(data) == list(NEU_NAMES)


@pytest.mark.parametrize("overrides, match", [({"dataset": "coco"}, "steel"), ({}, "steel"),
                                              ({"dataset": "steel", "epochs": 3}, "epochs"),
                                              ({"dataset": "gc10-det", "root": "x"}, "src="),
                                              ({"dataset": "steel", "overwrite": "maybe"}, "overwrite")])
def test_data_command_errors(tmp_path, overrides, match):
    with pytest.raises(KDConfigError, match=match):
        data_command({**overrides, **({"root": str(tmp_path / "r")} if "root" not in overrides else {})})
