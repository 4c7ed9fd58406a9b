"""Procedural steel defect dataset: determinism, label validity, Ultralytics can load it, reuse and bad input."""

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from yolo_kd.data.steel import STEEL_NAMES, make_steel_dataset
from yolo_kd.errors import KDConfigError

os.environ.setdefault("YOLO_OFFLINE", "1")


def _files(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != "data.yaml" and p.suffix != ".cache"}


@pytest.fixture(scope="module")
def steel(tmp_path_factory) -> Path:
    return make_steel_dataset(tmp_path_factory.mktemp("steel"), n_train=12, n_val=4, imgsz=128, seed=3)


def test_same_seed_same_bytes_other_seed_differs(steel, tmp_path):
    again = make_steel_dataset(tmp_path / "again", n_train=12, n_val=4, imgsz=128, seed=3)
    other = make_steel_dataset(tmp_path / "other", n_train=12, n_val=4, imgsz=128, seed=4)
    first = _files(steel.parent)
    assert len(first) == 2 * (12 + 4)
    assert first == _files(again.parent)
    second = _files(other.parent)
    assert first.keys() == second.keys()
    assert all(first[k] != second[k] for k in first if k.endswith(".jpg"))


def test_labels_valid(steel):
    root = steel.parent
    counts = np.zeros(len(STEEL_NAMES), int)
    for split, n in (("train", 12), ("val", 4)):
        images = sorted((root / "images" / split).glob("*.jpg"))
        assert len(images) == n
        for image in images:
            img = cv2.imread(str(image))
            assert img.shape == (128, 128, 3)
            rows = np.loadtxt(root / "labels" / split / f"{image.stem}.txt", ndmin=2)
            assert 1 <= len(rows) <= 4
            cls, xc, yc, w, h = rows.T
            assert np.all(cls == cls.round()) and np.all((cls >= 0) & (cls <= 5))
            assert np.all(w > 0) and np.all(h > 0)
            assert np.all(xc - w / 2 >= -1e-6) and np.all(xc + w / 2 <= 1 + 1e-6)
            assert np.all(yc - h / 2 >= -1e-6) and np.all(yc + h / 2 <= 1 + 1e-6)
            counts += np.bincount(cls.astype(int), minlength=6)
    assert counts.sum() >= 16


def test_boxes_are_tight_around_the_defect(monkeypatch):
    """On a flat background without effects, every visibly changed pixel is boxed and every box edge touches one."""
    from yolo_kd.data import steel as steel_mod

    monkeypatch.setattr(steel_mod, "_background", lambda rng, size: np.full((size, size), 128.0, np.float32))
    for i in range(30):
        img, boxes = steel_mod.render_steel_image([7, 0, i], 160, augment=None)
        assert 1 <= len(boxes) <= 4
        diff = np.abs(img.astype(int) - 128)
        inside = np.zeros_like(diff, bool)
        for cls, x1, y1, x2, y2 in boxes:
            assert 0 <= cls <= 5 and 0 <= x1 < x2 <= 160 and 0 <= y1 < y2 <= 160
            inside[y1:y2, x1:x2] = True
        assert not (diff[~inside] >= 16).any()
    monkeypatch.setattr(steel_mod, "_MAX_DEFECTS", 1)  # one defect per image: box edges are exact
    for i in range(30):
        img, ((cls, x1, y1, x2, y2),) = steel_mod.render_steel_image([8, 0, i], 160, augment=None)
        crop = np.abs(img[y1:y2, x1:x2].astype(int) - 128)
        edge = min(0.3 * crop.max(), 15) - 1
        assert min(crop[0].max(), crop[-1].max(), crop[:, 0].max(), crop[:, -1].max()) >= edge, cls


def test_all_classes_appear_in_default_sized_split(tmp_path):
    from yolo_kd.data import steel as steel_mod

    seen = set()
    for i in range(40):
        seen.update(b[0] for b in steel_mod.render_steel_image([0, 0, i], 128)[1])
    assert seen == set(range(6))


def test_check_det_dataset_loads(steel):
    from ultralytics.data.utils import check_det_dataset

    from yolo_kd.offline import install_local_fonts

    install_local_fonts()
    info = check_det_dataset(str(steel))
    assert info["nc"] == 6
    assert [info["names"][i] for i in range(6)] == list(STEEL_NAMES)
    assert Path(info["train"]).is_dir() and Path(info["val"]).is_dir()


class _Recorder:
    def __init__(self):
        self.lines = []

    def info(self, msg, *args):
        self.lines.append(msg % args)

    warning = info


def test_existing_dataset_is_reused(steel, monkeypatch):
    from yolo_kd.data import _common

    log = _Recorder()
    monkeypatch.setattr(_common, "LOGGER", log)
    stamp = (steel.parent / "images" / "train" / "steel_00000.jpg").stat().st_mtime_ns
    assert make_steel_dataset(steel.parent, n_train=12, n_val=4, imgsz=128, seed=3) == steel
    assert (steel.parent / "images" / "train" / "steel_00000.jpg").stat().st_mtime_ns == stamp
    assert len(log.lines) == 1 and "reusing" in log.lines[0] and "overwrite=True" in log.lines[0]
    # other settings: still reused, with a warning that says how to rebuild
    assert make_steel_dataset(steel.parent, n_train=5, n_val=4, imgsz=128, seed=3) == steel
    assert "other settings" in log.lines[1]


def test_overwrite_regenerates(tmp_path):
    data = make_steel_dataset(tmp_path, n_train=3, n_val=1, imgsz=96, seed=0)
    data = make_steel_dataset(tmp_path, n_train=2, n_val=1, imgsz=96, seed=0, overwrite=True)
    assert len(list((data.parent / "images" / "train").glob("*.jpg"))) == 2


@pytest.mark.parametrize("kwargs", [dict(n_train=0), dict(imgsz=32), dict(seed=-1), dict(n_val="many")])
def test_bad_arguments_raise_kd_config_error(tmp_path, kwargs):
    with pytest.raises(KDConfigError):
        make_steel_dataset(tmp_path, **kwargs)


def test_root_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(KDConfigError, match="root="):
        make_steel_dataset(tmp_path / "f", n_train=1, n_val=1)
