"""`unlabeled_boxes: label+conf`: the teacher labels the clean pool images once, at the start of training, as
`yolo-kd label conf=` would write them (Ultralytics' predictor: letterbox at the teacher's size, NMS at IoU 0.7,
boxes clipped to the original image and normalised by it), kept in memory: nothing is written next to the user's
images. The pool's dataset then carries the boxes through the run's augmentation like labels (mosaic, affine, flips),
so the student's detection loss on a pool image reads boxes the teacher found on the whole clean image, moved with
it, rather than boxes decoded from its target on the augmented batch (`pseudo_boxes`, the online rules).

This is the pseudo-label route (`yolo-kd label`, then a plain run on labeled + pseudo-labeled images) inside the
engine: the labeled stream stays the user's, the dense KD terms still read every pool image, and a resumed run labels
the pool again with the same frozen teacher (the same boxes: prediction is deterministic on one machine).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .label import predictions, result_boxes
from .ultra import progress


def teacher_labels(teacher: str, images: list[str], conf: float, imgsz: int, device: str, batch: int,
                   class_map: dict[int, int] | None = None) -> dict[str, np.ndarray]:
    """{image path as given: (n, 5) float32 [class, x, y, w, h], normalised xywh} of the teacher's boxes at score >=
    `conf` on each image at `imgsz`; an image without a box maps to a (0, 5) array, one Ultralytics cannot decode is
    left out (the pool's dataset skips it when drawn)."""
    from .evaluation.predict import load_detector

    model = load_detector(teacher)
    given = {str(Path(p).absolute()): p for p in images}
    predict = {"conf": conf, "imgsz": imgsz, "device": device, "batch": batch}
    labels = {}
    for result in progress(predictions(model, list(given), predict), total=len(images),
                           desc="yolo-kd: the teacher labels the pool"):
        labels[given[result.path]] = np.array(result_boxes(result, class_map), dtype=np.float32).reshape(-1, 5)
    return labels
