"""Issue 32: `unlabeled_boxes: label` / `label+conf` (the default), the pseudo-label route inside the engine: the
teacher labels the clean pool images once, at the start; at a threshold the boxes are exactly what `yolo-kd label`
writes, by count they are the best across the pool (equal to the brute-force rule); the pool's loader carries them
through the augmentation (a box still covers its object after mosaic, scale and flips); a real run trains the
student's detection loss on them, keeps the labeled stream and writes nothing beside the user's images."""

import copy
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import read_results
from ultralytics import YOLO

import yolo_kd
from yolo_kd import KDConfigError
from yolo_kd.distiller import POOL_DETECTION_TERM
from yolo_kd.label import predictions, result_boxes
from yolo_kd.pool_labels import BestScores, teacher_labels
from yolo_kd.recipe import Recipe, box_selection, labels_pool_once
from yolo_kd.ultra import train_args
from yolo_kd.unlabeled import resolve_images
from yolo_kd.unlabeled_loader import UnlabeledLoader

from test_unlabeled import NAMES, recorded_run

LOW = 0.001  # the tiny teacher scores the pool below 0.01: keep most of what it predicts


def disc_boxes(image_file: str) -> np.ndarray:
    """(n, 5) [class 0, x, y, w, h] normalised: the bounding boxes of the grey discs of a pool image, found by pixels."""
    img = cv2.imread(image_file)
    grey = ((img > 150).all(-1)).astype(np.uint8)
    count, _, stats, _ = cv2.connectedComponentsWithStats(grey)
    h, w = grey.shape
    rows = [(0, (x + bw / 2) / w, (y + bh / 2) / h, bw / w, bh / h) for x, y, bw, bh, _ in stats[1:count]]
    return np.array(rows, dtype=np.float32).reshape(-1, 5)


@pytest.mark.parametrize("given, kept, rule", [("label", "label", (None, True)), (" Label+.4", "label+0.4", (0.4, True))])
def test_label_rule_is_parsed_and_kept_for_resume(given, kept, rule):
    recipe = Recipe.from_kwargs(teacher="t.pt", unlabeled=["pool"], unlabeled_boxes=given)
    assert recipe.unlabeled_boxes == kept and labels_pool_once(kept)
    assert box_selection(kept) == rule  # (threshold, the labeled count)
    assert Recipe.from_saved(copy.deepcopy(recipe.to_dict())).unlabeled_boxes == kept
    assert not labels_pool_once("match+0.25") and not labels_pool_once(0.25)


def test_the_running_best_scores_end_at_the_count_th_best():
    """Streamed in any order, the heap's lowest score is the count-th best of all (0 until `count` were seen, none
    with a count of 0)."""
    scores = np.random.default_rng(0).random(50).tolist()
    best = BestScores(7)
    for chunk in (scores[:3], scores[3:30], scores[30:]):
        best.add(chunk)
    assert best.lowest() == sorted(scores, reverse=True)[6]
    partial = BestScores(7)
    partial.add(scores[:3])
    assert partial.lowest() == 0.0 and BestScores(0).lowest() == float("inf")


@pytest.mark.parametrize("value", ["label+", "label+1.5", "label+x", "labels"])
def test_a_bad_label_rule_is_refused_in_one_line(value):
    with pytest.raises(KDConfigError, match="unlabeled_boxes.*'label\\+0.25'") as err:
        Recipe.from_kwargs(teacher="t.pt", unlabeled=["pool"], unlabeled_boxes=value)
    assert "\n" not in str(err.value)


def test_the_pool_boxes_are_what_yolo_kd_label_writes(tiny_teacher, tiny_pool, tmp_path):
    """Same teacher, size and threshold, no count: every pool image's boxes equal its label file's lines (six
    decimals)."""
    files = resolve_images(tiny_pool)
    boxes = teacher_labels(str(tiny_teacher), files, LOW, 64, "cpu", 4)
    yolo_kd.label_images(str(tiny_teacher), str(tiny_pool), conf=LOW, imgsz=64, out=str(tmp_path / "labels"))
    assert sorted(boxes) == sorted(files) and sum(len(b) for b in boxes.values()) > 0
    for file, rows in boxes.items():
        written = np.loadtxt(tmp_path / "labels" / f"{file.rsplit('/', 1)[-1].rsplit('.', 1)[0]}.txt", ndmin=2)
        assert written.reshape(-1, 5) == pytest.approx(rows, abs=1e-6)


@pytest.mark.parametrize("conf", [None, 0.006])
def test_the_count_keeps_the_best_boxes_across_the_pool(tiny_teacher, tiny_pool, conf):
    """The count rule, with and without a threshold beside it, equals the brute-force rule on every prediction: the
    boxes at score >= min(conf, the count-th best score of the whole pool)."""
    files, count = resolve_images(tiny_pool), 9
    everything = {r.path: r for r in predictions(YOLO(str(tiny_teacher)), files, {"conf": 1e-5, "imgsz": 64})}
    scores = sorted((s for r in everything.values() for s in r.boxes.conf.tolist()), reverse=True)
    cut = min(conf if conf is not None else 1.0, scores[count - 1])
    boxes = teacher_labels(str(tiny_teacher), files, conf, 64, "cpu", 4, count=count, floor=1e-5)
    for file in files:
        result = everything[str(Path(file).absolute())]
        expected = [row[:5] for row in result_boxes(result, None) if row[5] >= cut]
        assert boxes[file] == pytest.approx(np.array(expected, dtype=np.float32).reshape(-1, 5), abs=1e-6)
    assert sum(len(b) for b in boxes.values()) >= count


def test_the_boxes_move_with_the_augmented_pool_images(tiny_pool):
    """Boxes given per file (the discs' own boxes) come out of mosaic, scale, translation and flips still on their
    discs: the pixel at each augmented box's centre is disc grey, not the pool's green or the mosaic's padding."""
    files = resolve_images(tiny_pool)
    boxes = {f: disc_boxes(f) for f in files}
    assert all(len(b) for b in boxes.values())
    args = train_args(imgsz=64, workers=0, mosaic=1.0, scale=0.5, translate=0.1, fliplr=0.5, hsv_h=0.0, hsv_s=0.0,
                      hsv_v=0.0)
    loader = UnlabeledLoader(files, args, {"names": NAMES, "channels": 3}, 64, 4, 32, 0, boxes=boxes)
    loader.restart(5)
    checked = 0
    for _ in range(4):
        drawn = loader.next(3)
        assert len(drawn["img"]) == 3 and (drawn["batch_idx"] < 3).all()
        for i, (x, y, _, _) in zip(drawn["batch_idx"].int().tolist(), drawn["bboxes"].tolist()):
            h, w = drawn["img"].shape[-2:]
            pixel = drawn["img"][i, :, min(int(y * h), h - 1), min(int(x * w), w - 1)]
            assert (pixel > 150).all(), f"box centre ({x:.2f}, {y:.2f}) of image {i} is not on a disc: {pixel}"
            checked += 1
    assert checked > 8


def test_a_run_trains_on_the_teachers_clean_pool_boxes(tiny_data, tiny_teacher, tiny_pool, tmp_path):
    """A real run with `unlabeled_boxes=label+0.001`: the labeled batches hash equal to a run without a pool, the
    engine's boxes are the teacher's on the clean images, `pool_det` trains, and no label file appears in the pool."""
    train = {"batch": 3, "nbs": 3, "mosaic": 1.0, "workers": 0}
    plain = recorded_run(tmp_path / "plain", tiny_data, tiny_teacher, **train)["labeled"]
    seen = recorded_run(tmp_path / "pool", tiny_data, tiny_teacher, tiny_pool, unlabeled_boxes=f"label+{LOW}",
                        **train)
    kept = seen["pool_boxes"]
    assert seen["labeled"] == plain
    files = resolve_images(tiny_pool)
    expected = teacher_labels(str(tiny_teacher), files, LOW, 64, "cpu", 4)
    assert sorted(kept) == sorted(files) and all(np.array_equal(kept[f], expected[f]) for f in files)
    rows = read_results(tmp_path / "pool" / "run")
    assert all(float(r[f"train/{POOL_DETECTION_TERM}"]) > 0 for r in rows)
    assert sorted(p.name for p in tiny_pool.iterdir()) == sorted(f.rsplit("/", 1)[-1] for f in files)


def test_a_class_map_puts_the_teachers_boxes_in_the_data_sets_classes(tiny_teacher, tiny_pool):
    """`class_map` maps data-set classes to teacher classes ({0: 1}: the data set's class 0 is the teacher's class 1);
    the pool's boxes come back in the data set's classes: the teacher's class-1 boxes as class 0, in place, and its
    other classes dropped."""
    from types import SimpleNamespace

    from yolo_kd.hooks import KDRun, label_pool

    files = resolve_images(tiny_pool)
    run = KDRun(Recipe.from_kwargs(teacher=str(tiny_teacher), unlabeled=str(tiny_pool), unlabeled_boxes=f"label+{LOW}",
                                   class_map={0: 1}))
    labeled = SimpleNamespace(labels=[{"cls": np.zeros((1, 1))}])  # one box per labeled image
    mapped = label_pool(SimpleNamespace(yolo_kd=run, args=train_args(imgsz=64, batch=4), device="cpu"), files, labeled)
    plain = teacher_labels(str(tiny_teacher), files, LOW, 64, "cpu", 4)
    assert {0, 1} <= {int(c) for b in plain.values() for c in b[:, 0]}  # the teacher predicts both classes here
    for f in files:
        ones = plain[f][plain[f][:, 0] == 1]
        assert np.array_equal(mapped[f][:, 1:], ones[:, 1:]) and (mapped[f][:, 0] == 0).all()
