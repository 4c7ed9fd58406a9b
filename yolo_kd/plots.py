"""Demo and benchmark figures: PR curves of several models on one figure, predictions side by side."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def plot_pr_curves(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, title: str) -> Path:
    """One figure, one precision-recall curve (mean over classes, IoU 0.5) per model: {label: (recall, precision)}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5), dpi=120)
    for label, (recall, precision) in curves.items():
        ax.plot(recall, precision, linewidth=2, label=label)
    ax.set(xlabel="Recall", ylabel="Precision", xlim=(0, 1), ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_predictions(models: dict[str, object], images: list[Path], path: Path, imgsz: int, conf: float = 0.25,
                     names: dict | None = None) -> Path:
    """A grid: one row per image; the first column the ground truth (the image's YOLO label file, green), then one
    column per model (label on top), its boxes above `conf` drawn by Ultralytics."""
    from .ultra import label_paths

    rows = []
    for image, label_file in zip(images, label_paths(images)):
        cells = [titled(cv2.resize(draw_ground_truth(cv2.imread(str(image)), label_file, names or {}), (256, 256)),
                        "ground truth")]
        for label, model in models.items():
            result = model.predict(str(image), imgsz=imgsz, conf=conf, verbose=False)[0]
            cells.append(titled(cv2.resize(result.plot(line_width=1, font_size=8), (256, 256)), label))
        rows.append(np.hstack(cells))
    cv2.imwrite(str(path), np.vstack(rows))
    return path


def draw_ground_truth(img: np.ndarray, label_file: str, names: dict) -> np.ndarray:
    """`img` with the boxes of its YOLO label file (`cls xc yc w h`, normalised) drawn in green with class names."""
    if img is None:
        return np.zeros((256, 256, 3), np.uint8)  # an unreadable image: an empty cell, not a crash
    h, w = img.shape[:2]
    lines = Path(label_file).read_text().split("\n") if Path(label_file).is_file() else []
    for line in lines:
        parts = line.split()
        if len(parts) < 5:
            continue
        cls, xc, yc, bw, bh = int(float(parts[0])), *(float(v) for v in parts[1:5])
        x1, y1, x2, y2 = (int(round(v)) for v in ((xc - bw / 2) * w, (yc - bh / 2) * h, (xc + bw / 2) * w,
                                                 (yc + bh / 2) * h))
        cv2.rectangle(img, (x1, y1), (x2, y2), (0, 200, 0), max(1, round(min(h, w) / 200)))
        cv2.putText(img, str(names.get(cls, cls)), (x1, max(y1 - 2, 8)), cv2.FONT_HERSHEY_SIMPLEX,
                    max(0.3, min(h, w) / 600), (0, 200, 0), 1, cv2.LINE_AA)
    return img


def titled(cell: np.ndarray, label: str) -> np.ndarray:
    """`cell` with `label` in white on black at its top left."""
    (w, h), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)
    cv2.rectangle(cell, (0, 0), (w + 8, h + base + 6), (0, 0, 0), -1)
    cv2.putText(cell, label, (4, h + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return cell


def plot_kd_results(results_csv: Path, terms: list[str], path: Path) -> list[str]:
    """`kd_results.png` beside Ultralytics' results.png (which draws the detection losses and metrics only): one
    panel per KD term (its `train/<term>` column per epoch, weighted as it joins the loss) and one for `kd_share`
    (the KD terms' share of the training loss). Returns the panels' titles."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(results_csv) as f:
        rows = [{k.strip(): v.strip() for k, v in row.items()} for row in csv.DictReader(f)]
    columns = [f"train/{t}" for t in terms if rows and f"train/{t}" in rows[0]]
    columns += ["kd_share"] if rows and "kd_share" in rows[0] else []
    fig, axes = plt.subplots(1, max(len(columns), 1), figsize=(3 * max(len(columns), 1), 2.8), dpi=110,
                             squeeze=False)
    epochs = [int(float(r["epoch"])) for r in rows]
    for ax, column in zip(axes[0], columns):
        ax.plot(epochs, [float(r[column]) for r in rows], marker=".", linewidth=2)
        ax.set_title(column, fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    fig.suptitle("yolo-kd: distillation terms", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return columns
