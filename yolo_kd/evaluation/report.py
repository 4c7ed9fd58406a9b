"""Text tables for evaluation results: COCO stats side by side, per-class AP, and why the two mAPs differ."""

from __future__ import annotations

import textwrap

from yolo_kd.evaluation.cocoeval import STAT_DESCRIPTIONS, STAT_NAMES
from yolo_kd.evaluation.table import format_table


def stats_table(results: dict[str, dict]) -> str:
    """The 12 pycocotools stats (rows) for each model (columns), then Ultralytics' mAP for the same run."""
    labels = list(results)
    rows = [
        [f"{name:<10} {STAT_DESCRIPTIONS[name]}", *(results[m]["coco"][name] for m in labels)] for name in STAT_NAMES
    ]
    rows.append(["Ultralytics mAP50-95", *(results[m]["ultralytics"]["mAP50-95"] for m in labels)])
    rows.append(["Ultralytics mAP50", *(results[m]["ultralytics"]["mAP50"] for m in labels)])
    rows.append(["delta mAP50-95 COCO-Ultralytics (points)", *(f"{results[m]['delta_points']:+.2f}" for m in labels)])
    return format_table(["pycocotools stat", *labels], rows)


def per_class_table(results: dict[str, dict]) -> str:
    """Per-class AP50-95 and AP50 (pycocotools) for each model; -1 = no ground truth of that class."""
    labels = list(results)
    first = results[labels[0]]["per_class"]
    headers = ["class", "id", "instances"]
    for m in labels:
        headers += [f"{m} AP50-95", f"{m} AP50"]
    rows = []
    for k, row in enumerate(first):
        cells = [row["name"], row["category_id"], row["instances"]]
        for m in labels:
            other = results[m]["per_class"][k]
            cells += [other["AP50-95"], other["AP50"]]
        rows.append(cells)
    return format_table(headers, rows)


def difference_notes(results: dict[str, dict]) -> list[str]:
    """Why pycocotools' mAP50-95 differs from Ultralytics' on the same detections (same run, same boxes)."""
    bullets = [
        "interpolation: pycocotools reads the precision envelope as a step function at 101 recall points"
        " (0:0.01:1, precision at the first recall >= r, 0 past the last recall) and averages them; Ultralytics"
        " linearly interpolates the envelope between its points (with a precision-1 sentinel at recall 0) at 101"
        " points and integrates with the trapezoid rule, so the areas differ most with few GT boxes or a steppy"
        " PR curve.",
        "detections per image: COCO keeps the top maxDets=100 per image; Ultralytics scores all (max_det="
        f"{next(iter(results.values()))['run'].get('max_det', 300)}).",
        "area ranges only change AP_small/medium/large (Ultralytics has none); classes without GT are -1 in COCO"
        " and absent from Ultralytics' mean.",
    ]
    notes = ["Why pycocotools and Ultralytics mAP50-95 differ on the SAME detections:"]
    for b in bullets:
        notes += textwrap.wrap(b, width=110, initial_indent="  - ", subsequent_indent="    ")
    for label, r in results.items():
        over = r.get("images_over_100_dets", 0)
        extra = f"; {over} image(s) have >100 detections, COCO ignores the rest" if over else ""
        notes.append(f"  {label}: COCO {r['coco']['mAP50-95']:.4f} vs Ultralytics {r['ultralytics']['mAP50-95']:.4f}"
                     f" ({r['delta_points']:+.2f} points){extra}")
    return notes
