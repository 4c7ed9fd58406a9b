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


def plot_predictions(models: dict[str, object], images: list[Path], path: Path, imgsz: int, conf: float = 0.25) -> Path:
    """A grid: one row per image, one column per model (label on top), boxes drawn by Ultralytics."""
    rows = []
    for image in images:
        cells = []
        for label, model in models.items():
            result = model.predict(str(image), imgsz=imgsz, conf=conf, verbose=False)[0]
            cell = cv2.resize(result.plot(line_width=1, font_size=8), (256, 256))
            (w, h), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)
            cv2.rectangle(cell, (0, 0), (w + 8, h + base + 6), (0, 0, 0), -1)
            cv2.putText(cell, label, (4, h + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
            cells.append(cell)
        rows.append(np.hstack(cells))
    cv2.imwrite(str(path), np.vstack(rows))
    return path
