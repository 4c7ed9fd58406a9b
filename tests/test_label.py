"""Issue 22 item 3: `yolo-kd label` writes pseudo-labels that decode to the teacher's boxes on the original image."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from ultralytics import YOLO

import yolo_kd
from yolo_kd import KDConfigError

ROOT = Path(__file__).parents[1]
LOW = 0.001  # the tiny teacher's scores are low: label everything it predicts


@pytest.fixture(scope="module")
def wide_images(tiny_data, tmp_path_factory) -> Path:
    """Four 128x64 (w x h) images, each two tiny val images side by side: non-square, so the letterbox pads."""
    val = sorted((tiny_data.parent / "images" / "val").glob("*.jpg"))
    folder = tmp_path_factory.mktemp("wide") / "images"
    folder.mkdir()
    for i in range(4):
        pair = [cv2.imread(str(val[(i + k) % len(val)])) for k in (0, 1)]
        cv2.imwrite(str(folder / f"w{i}.png"), np.concatenate(pair, axis=1))
    return folder


def teacher_boxes(teacher, image, conf) -> np.ndarray:
    """(n, 6) rows cls, x1, y1, x2, y2, conf of the teacher's own prediction on the original image, sorted."""
    b = YOLO(str(teacher)).predict(str(image), imgsz=64, conf=conf, verbose=False)[0].boxes
    rows = np.column_stack([b.cls.numpy(), b.xyxy.numpy(), b.conf.numpy()])
    return rows[np.lexsort(rows[:, 4::-1].T)]


def written_boxes(label: Path, width: int, height: int) -> np.ndarray:
    """(n, 5) rows cls, x1, y1, x2, y2 in original-image pixels decoded from a YOLO label file, sorted."""
    rows = np.loadtxt(label, ndmin=2).reshape(-1, 5)
    c, x, y, w, h = rows.T
    pixels = np.column_stack([c, (x - w / 2) * width, (y - h / 2) * height, (x + w / 2) * width, (y + h / 2) * height])
    return pixels[np.lexsort(pixels[:, ::-1].T)]


def label_files(images: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((images.parent / "labels").glob("*.txt"))}


def test_boxes_decode_to_the_teachers_predictions_on_the_original_image(tiny_teacher, wide_images):
    summary = yolo_kd.label_images(str(tiny_teacher), str(wide_images), conf=LOW, imgsz=64, batch=4)
    assert summary["images"] == 4 and summary["labels"] == 4
    assert summary["written_to"] == str(wide_images.parent / "labels")
    total = 0
    for image in sorted(wide_images.glob("*.png")):
        label = wide_images.parent / "labels" / f"{image.stem}.txt"
        got = written_boxes(label, 128, 64)
        want = teacher_boxes(tiny_teacher, image, LOW)
        assert got.shape[0] == want.shape[0]
        assert np.array_equal(got[:, 0], want[:, 0])  # classes
        assert np.abs(got[:, 1:] - want[:, 1:5]).max(initial=0) < 1.0  # within 1 px, letterbox undone
        assert (got[:, [1, 2]] >= 0).all() and (got[:, 3] <= 128).all() and (got[:, 4] <= 64).all()
        total += got.shape[0]
    assert total == summary["boxes"] > 0


def test_conf_keeps_only_boxes_scored_above_it(tiny_teacher, wide_images, tmp_path):
    image = sorted(wide_images.glob("*.png"))[0]
    scores = np.unique(teacher_boxes(tiny_teacher, image, LOW)[:, 5])
    assert len(scores) >= 3, "the tiny teacher predicts too little to test conf="
    counts = []
    for conf in ((scores[0] + scores[1]) / 2, (scores[-2] + scores[-1]) / 2):
        out = tmp_path / f"conf{conf:.6f}"
        yolo_kd.label_images(str(tiny_teacher), str(image), conf=float(conf), imgsz=64, out=str(out))
        got = written_boxes(out / f"{image.stem}.txt", 128, 64)
        full = teacher_boxes(tiny_teacher, image, LOW)
        for row in got:  # each written box is one of the teacher's, and that box scored above conf
            match = full[(full[:, 0] == row[0]) & (np.abs(full[:, 1:5] - row[1:]).max(1) < 1.0)]
            assert len(match) and match[:, 5].max() >= conf
        counts.append(len(got))
    assert 1 <= counts[1] < counts[0]


def test_class_map_renames_and_drops(tiny_teacher, wide_images, tmp_path):
    everything = yolo_kd.label_images(str(tiny_teacher), str(wide_images), conf=LOW, imgsz=64, out=str(tmp_path / "a"))
    assert set(everything["classes"]) == {0, 1}
    mapped = yolo_kd.label_images(str(tiny_teacher), str(wide_images), conf=LOW, imgsz=64, out=str(tmp_path / "b"),
                                  class_map={1: 5})
    assert mapped["classes"] == {5: everything["classes"][1]}
    with pytest.raises(KDConfigError, match="does not fit teacher classes"):
        yolo_kd.label_images(str(tiny_teacher), str(wide_images), class_map={7: 0}, out=str(tmp_path / "c"))
    assert not (tmp_path / "c").exists()


def test_refuses_to_overwrite_and_leaves_files_byte_identical(tiny_teacher, wide_images, tmp_path):
    wide_images = Path(shutil.copytree(wide_images, tmp_path / "images"))
    labels = tmp_path / "labels"
    labels.mkdir()
    (labels / "w0.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (labels / "w2.txt").write_text("")
    before = label_files(wide_images)
    with pytest.raises(KDConfigError, match=r"^2 of 4 label files already exist .*overwrite=True"):
        yolo_kd.label_images(str(tiny_teacher), str(wide_images), conf=LOW, imgsz=64)
    assert label_files(wide_images) == before
    yolo_kd.label_images(str(tiny_teacher), str(wide_images), conf=0.99, imgsz=64, overwrite=True)
    after = label_files(wide_images)
    assert set(after) == {"w0.txt", "w1.txt", "w2.txt", "w3.txt"} and after["w0.txt"] == b""  # background files


def cli(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "YOLO_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "yolo_kd.cli", "label", *args], capture_output=True, text=True,
                          env=env, timeout=300)


@pytest.mark.parametrize("kind", ["missing", "empty"])
def test_missing_or_empty_source_is_one_line_exit_2(tiny_teacher, tmp_path, kind):
    source = tmp_path / "images"
    if kind == "empty":
        source.mkdir()
    out = cli(f"teacher={tiny_teacher}", f"source={source}")
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert out.returncode == 2 and len(lines) == 1, out.stderr[-2000:]
    assert lines[0].startswith(f"yolo-kd label: error: source={source} ")
    assert [p.name for p in tmp_path.iterdir()] == (["images"] if kind == "empty" else [])
    assert not list(tmp_path.rglob("*.txt"))


def test_cli_writes_labels_and_prints_one_summary_line(tiny_teacher, wide_images, tmp_path):
    out = cli(f"teacher={tiny_teacher}", f"source={wide_images}/*.png", "conf=0.001", "imgsz=64", f"out={tmp_path}")
    assert out.returncode == 0, out.stderr[-2000:]
    summary = [ln for ln in out.stdout.splitlines() if ln.startswith("yolo-kd label:")]
    assert len(summary) == 1 and "4 images" in summary[0] and str(tmp_path) in summary[0]
    assert sorted(p.name for p in tmp_path.glob("*.txt")) == ["w0.txt", "w1.txt", "w2.txt", "w3.txt"]
    assert "label" in cli("help").stdout and "class_map" in cli("help").stdout


def test_a_list_that_would_be_overwritten_by_a_label_is_refused(tiny_teacher, wide_images, tmp_path):
    image = Path(shutil.copy(sorted(wide_images.glob("*.png"))[0], tmp_path / "list.png"))
    listing = tmp_path / "list.txt"
    listing.write_text(f"{image}\n")
    with pytest.raises(KDConfigError, match="is also the label file of an image"):
        yolo_kd.label_images(str(tiny_teacher), str(listing), overwrite=True)
    assert listing.read_text() == f"{image}\n"


def test_an_unreadable_image_gets_no_label_and_the_others_keep_theirs(tiny_teacher, wide_images, tmp_path):
    images = Path(shutil.copytree(wide_images, tmp_path / "images"))
    (images / "w1.png").write_bytes(b"not an image")  # sorted second: a shifted pairing would mislabel w2, w3
    summary = yolo_kd.label_images(str(tiny_teacher), str(images), conf=LOW, imgsz=64, batch=4)
    assert summary["images"] == 3 and summary["unreadable"] == 1
    assert sorted(p.name for p in (tmp_path / "labels").iterdir()) == ["w0.txt", "w2.txt", "w3.txt"]
    for name in ("w0", "w2", "w3"):
        got = written_boxes(tmp_path / "labels" / f"{name}.txt", 128, 64)
        want = teacher_boxes(tiny_teacher, images / f"{name}.png", LOW)
        assert got.shape[0] == want.shape[0] and np.abs(got[:, 1:] - want[:, 1:5]).max(initial=0) < 1.0
