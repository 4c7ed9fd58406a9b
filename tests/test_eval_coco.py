"""COCO conversion and pycocotools metrics on hand-made labels whose boxes, IoUs and APs are known exactly."""

import json

import cv2
import numpy as np
import pytest

from yolo_kd.errors import KDConfigError
from yolo_kd.evaluation import (
    STAT_NAMES,
    CategoryMap,
    coco_evaluate,
    detections_to_coco_results,
    load_coco_dataset,
    yolo_labels_to_coco,
)

NAMES = ["square", "disc"]

# Boxes in pixels (x, y, w, h) chosen so every normalised value is exact in binary and in 6 decimals.
# image a is 128 wide x 64 high (non-square on purpose), image b is 64 x 64.
BOXES = {
    "a.png": ((128, 64), [(0, (16, 16, 32, 32)), (1, (72, 8, 32, 48))]),
    "b.png": ((64, 64), [(1, (8, 24, 32, 32))]),
}


@pytest.fixture
def hand_dataset(tmp_path):
    """Images + YOLO label files with the exact boxes above; returns the image files in order."""
    (tmp_path / "images" / "val").mkdir(parents=True)
    (tmp_path / "labels" / "val").mkdir(parents=True)
    files = []
    for name, ((w, h), boxes) in BOXES.items():
        image = tmp_path / "images" / "val" / name
        cv2.imwrite(str(image), np.zeros((h, w, 3), np.uint8))
        lines = [
            f"{c} {(x + bw / 2) / w:.6f} {(y + bh / 2) / h:.6f} {bw / w:.6f} {bh / h:.6f}"
            for c, (x, y, bw, bh) in boxes
        ]
        (tmp_path / "labels" / "val" / name.replace(".png", ".txt")).write_text("\n".join(lines) + "\n")
        files.append(str(image))
    return files


def detections_from_gt(gt, image_files, shift_x=0.0, score=1.0):
    """One detection per GT box, moved `shift_x` pixels to the right, as the validator would hand them over."""
    by_id = {im["id"]: f for im, f in zip(gt["images"], image_files)}
    per_image = {}
    for a in gt["annotations"]:
        x, y, w, h = a["bbox"]
        im_file = by_id[a["image_id"]]
        det = per_image.setdefault(im_file, {"im_file": im_file, "bboxes": [], "conf": [], "cls": []})
        det["bboxes"].append([x + shift_x, y, x + shift_x + w, y + h])
        det["conf"].append(score)
        det["cls"].append(a["category_id"] - 1)
    return list(per_image.values())


def evaluate(gt, image_ids, detections):
    return coco_evaluate(gt, detections_to_coco_results(detections, image_ids, [1, 2]))


def test_ground_truth_fields_are_exact(hand_dataset):
    gt, image_ids = yolo_labels_to_coco(hand_dataset, NAMES)
    assert [(im["id"], im["file_name"], im["width"], im["height"]) for im in gt["images"]] == [
        (1, "a.png", 128, 64),
        (2, "b.png", 64, 64),
    ]
    assert gt["categories"] == [
        {"id": 1, "name": "square", "supercategory": ""},
        {"id": 2, "name": "disc", "supercategory": ""},
    ]
    anns = [(a["id"], a["image_id"], a["category_id"], a["bbox"], a["area"], a["iscrowd"]) for a in gt["annotations"]]
    assert anns == [
        (1, 1, 1, [16.0, 16.0, 32.0, 32.0], 1024.0, 0),
        (2, 1, 2, [72.0, 8.0, 32.0, 48.0], 1536.0, 0),
        (3, 2, 2, [8.0, 24.0, 32.0, 32.0], 1024.0, 0),
    ]
    assert sorted(image_ids.values()) == [1, 2]


def test_perfect_predictions_give_ap_one(hand_dataset):
    gt, image_ids = yolo_labels_to_coco(hand_dataset, NAMES)
    result = evaluate(gt, image_ids, detections_from_gt(gt, hand_dataset))
    assert set(result["stats"]) == set(STAT_NAMES)
    assert result["stats"]["mAP50-95"] == pytest.approx(1.0)
    assert result["stats"]["mAP50"] == pytest.approx(1.0)
    assert result["stats"]["mAP_large"] == -1  # no box above 96^2 px: pycocotools' "no ground truth"
    assert [(c["name"], c["instances"], c["AP50-95"], c["AP50"]) for c in result["per_class"]] == [
        ("square", 1, pytest.approx(1.0), pytest.approx(1.0)),
        ("disc", 2, pytest.approx(1.0), pytest.approx(1.0)),
    ]


@pytest.mark.parametrize(
    "shift, expected",
    [
        # every box is 32 px wide: a shift d gives IoU (32-d)/(32+d) (heights equal).
        (8.0, 0.3),  # IoU 24/40 = 0.6 exactly: a match at 0.50, 0.55 and 0.60 (COCO matches IoU >= t) -> 3/10
        (8.001, 0.2),  # IoU 0.59995: just below the 0.60 threshold -> 0.50, 0.55 only -> 2/10
        (9.0, 0.2),  # IoU 23/41 = 0.561 -> 2/10
        (16.0, 0.0),  # IoU 16/48 = 0.333 -> no threshold
        (1.0, 0.9),  # IoU 31/33 = 0.939 -> all but 0.95 -> 9/10
    ],
)
def test_shifted_predictions_give_hand_computed_ap(hand_dataset, shift, expected):
    gt, image_ids = yolo_labels_to_coco(hand_dataset, NAMES)
    result = evaluate(gt, image_ids, detections_from_gt(gt, hand_dataset, shift_x=shift))
    assert result["stats"]["mAP50-95"] == pytest.approx(expected, abs=1e-12)
    assert [c["AP50-95"] for c in result["per_class"]] == [pytest.approx(expected, abs=1e-12)] * 2
    assert result["stats"]["mAP50"] == pytest.approx(1.0 if expected > 0 else 0.0)


def test_false_positive_ranked_first_halves_precision(hand_dataset):
    """Class 'square' has 1 GT: an FP scored 0.9 ranked above the TP (0.8) -> precision 1/2 at every recall."""
    gt, image_ids = yolo_labels_to_coco(hand_dataset, NAMES)
    detections = detections_from_gt(gt, hand_dataset)
    for det in detections:
        if det["im_file"].endswith("a.png"):
            det["conf"] = [0.8 if c == 0 else 1.0 for c in det["cls"]]
            det["bboxes"].append([100.0, 40.0, 120.0, 60.0])  # far from everything
            det["conf"].append(0.9)
            det["cls"].append(0)
    result = evaluate(gt, image_ids, detections)
    assert [c["AP50-95"] for c in result["per_class"]] == [pytest.approx(0.5), pytest.approx(1.0)]
    assert result["stats"]["mAP50-95"] == pytest.approx(0.75)


def test_no_predictions_scores_zero(hand_dataset):
    gt, image_ids = yolo_labels_to_coco(hand_dataset, NAMES)
    result = evaluate(gt, image_ids, [])
    assert result["stats"]["mAP50-95"] == 0.0
    assert result["n_detections"] == 0


def test_prediction_for_unknown_image_or_class_is_refused(hand_dataset, tmp_path):
    gt, image_ids = yolo_labels_to_coco(hand_dataset, NAMES)
    with pytest.raises(KDConfigError, match="not in the ground truth"):
        unknown = [{"im_file": str(tmp_path / "x.png"), "bboxes": [], "conf": [], "cls": []}]
        detections_to_coco_results(unknown, image_ids, [1, 2])
    bad = [{"im_file": hand_dataset[0], "bboxes": [[0, 0, 1, 1]], "conf": [1.0], "cls": [5]}]
    with pytest.raises(KDConfigError, match="2 classes"):
        detections_to_coco_results(bad, image_ids, [1, 2])


# ---- COCO json datasets with non-contiguous category ids ----


def test_category_map_both_ways():
    cmap = CategoryMap([{"id": 7, "name": "c"}, {"id": 1, "name": "a"}, {"id": 3, "name": "b"}])
    assert cmap.category_ids == [1, 3, 7] and cmap.names == ["a", "b", "c"]
    assert [cmap.to_index(i) for i in (1, 3, 7)] == [0, 1, 2]
    assert [cmap.to_category_id(i) for i in (0, 1, 2)] == [1, 3, 7]
    assert all(cmap.to_category_id(cmap.to_index(i)) == i for i in (1, 3, 7))
    with pytest.raises(KDConfigError, match="category id 2"):
        cmap.to_index(2)
    with pytest.raises(KDConfigError, match="out of range"):
        cmap.to_category_id(3)


def test_coco_json_dataset_round_trip(tmp_path):
    """instances json (ids 1, 3, 7) -> YOLO mirror with class 0/1/2 -> detections mapped back -> AP 1 on the json."""
    images = tmp_path / "coco" / "val2017"
    images.mkdir(parents=True)
    for name in ("p.jpg", "q.jpg"):
        cv2.imwrite(str(images / name), np.zeros((64, 128, 3), np.uint8))
    coco = {
        "images": [{"id": 42, "file_name": "p.jpg", "width": 128, "height": 64},
                   {"id": 43, "file_name": "q.jpg", "width": 128, "height": 64}],
        "categories": [{"id": 7, "name": "c"}, {"id": 1, "name": "a"}, {"id": 3, "name": "b"}],
        "annotations": [
            {"id": 1, "image_id": 42, "category_id": 7, "bbox": [16, 16, 32, 32], "area": 1024, "iscrowd": 0},
            {"id": 2, "image_id": 42, "category_id": 1, "bbox": [64, 8, 32, 48], "area": 1536, "iscrowd": 0},
            {"id": 3, "image_id": 43, "category_id": 3, "bbox": [8, 24, 64, 32], "area": 2048, "iscrowd": 0},
        ],
    }
    ann_file = tmp_path / "coco" / "annotations" / "instances_val2017.json"
    ann_file.parent.mkdir()
    ann_file.write_text(json.dumps(coco))

    evalset = load_coco_dataset(ann_file, tmp_path / "mirror")  # images found by the usual COCO layout
    assert evalset.category_ids == [1, 3, 7] and evalset.names == ["a", "b", "c"]
    assert evalset.class_index(7) == 2
    labels = sorted((tmp_path / "mirror" / "labels" / "val2017").glob("*.txt"))
    assert [p.read_text().split()[0::5] for p in labels] == [["2", "0"], ["1"]]  # p.jpg: ids 7, 1; q.jpg: id 3

    # detections in model indices on the mirror's image paths, mapped back to the json's ids
    by_id = {v: k for k, v in evalset.image_ids.items()}
    detections = [
        {"im_file": by_id[a["image_id"]], "bboxes": [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                                                     a["bbox"][1] + a["bbox"][3]]],
         "conf": [1.0], "cls": [evalset.class_index(a["category_id"])]}
        for a in coco["annotations"]
    ]
    results = detections_to_coco_results(detections, evalset.image_ids, evalset.category_ids)
    assert sorted((r["image_id"], r["category_id"]) for r in results) == [(42, 1), (42, 7), (43, 3)]
    metrics = coco_evaluate(evalset.gt, results)
    assert metrics["stats"]["mAP50-95"] == pytest.approx(1.0)
    assert [c["category_id"] for c in metrics["per_class"]] == [1, 3, 7]

    with pytest.raises(KDConfigError, match="images="):
        load_coco_dataset(ann_file, tmp_path / "mirror2", images_dir=tmp_path / "nowhere")
