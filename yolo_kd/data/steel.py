"""Procedural steel-surface defect dataset with NEU-DET's six classes, in the Ultralytics YOLO layout.

No real steel-defect data can be downloaded on an air-gapped machine, so the defect demo draws its own: grey
brushed-steel textures (noise smeared along the rolling direction, rolling marks, a lighting gradient) with 1-4
defects per image, each class drawn so a small YOLO can tell them apart at 128-200 px in a few epochs:

==  ===============  =========================================================================
0   crazing          a network of fine dark cracks (jagged lines joining nearby points)
1   inclusion        1-3 elongated dark spots/streaks along the rolling direction
2   patches          an irregular, mottled dark (or light) blotch with soft edges
3   pitted_surface   a cluster of small round dark pits with a light rim
4   rolled-in_scale  many small flaky marks stretched along the rolling direction, in a band
5   scratches        a long thin bright (or dark) line at an angle to the rolling direction
==  ===============  =========================================================================

Every box is the tight box of the pixels the defect visibly changed. Image-only effects (noise, blur, lighting,
texture) come from albumentations, seeded per image, so the same seed writes byte-identical files.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from yolo_kd.errors import KDConfigError

from ._common import LOGGER, positive_int, prepare_root, reuse_existing, split_dirs, stamp, write_data_yaml, yolo_line

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations checks PyPI for updates on import otherwise

#: NEU-DET's class names, in NEU-DET's order (class ids 0..5).
STEEL_NAMES = ("crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches")

_WHAT = "steel dataset"
_MAX_DEFECTS = 4
_MAX_OVERLAP_IOU = 0.15
_VISIBLE = 15.0  # grey levels: a pixel changed this much (or 30 % of the defect's peak, if less) is inside the box


# ----------------------------------------------------------------------------------------------------- textures
def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A float32 brushed-steel texture, rolling direction along x: grain, rolling marks, lighting gradient."""
    img = np.full((size, size), rng.uniform(100, 170), np.float32)
    # brushed grain: white noise smeared along the rolling direction
    k = int(rng.integers(max(5, size // 20), max(7, size // 5))) | 1
    grain = cv2.blur(rng.standard_normal((size, size)).astype(np.float32), (k, 1)) * np.sqrt(k)
    img += grain * rng.uniform(3, 8)
    # rolling marks: a row profile of smoothed noise plus a few faint full-width lines
    rows = cv2.GaussianBlur(rng.standard_normal((size, 1)).astype(np.float32), (1, 0), rng.uniform(0.8, 3.0))
    img += rows / (rows.std() + 1e-6) * rng.uniform(2, 6)
    for _ in range(int(rng.integers(0, 6))):
        y = int(rng.integers(0, size))
        x1, x2 = sorted(int(v) for v in rng.integers(0, size, 2))
        img[y, x1:x2 + 1] += rng.uniform(-7, 7)
    # lighting: a linear gradient in a random direction and a soft hot spot
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    theta = rng.uniform(0, 2 * np.pi)
    img += ((xx - 0.5) * np.cos(theta) + (yy - 0.5) * np.sin(theta)) * rng.uniform(8, 35)
    cx, cy = rng.uniform(0, 1, 2)
    img += np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / rng.uniform(0.05, 0.3)) * rng.uniform(-10, 15)
    return img


# ------------------------------------------------------------------------------------------------------ defects
# Each drawer returns a float32 (h, w) layer of signed intensity changes; the defect's box is the tight box of the
# pixels whose change is at least _VISIBLE grey levels (or 30 % of the layer's strongest change, if less).


def _crazing(rng, w, h, sc):
    n = int(np.clip(w * h / (130 * sc * sc), 8, 30))
    pts = rng.uniform((0, 0), (w - 1, h - 1), (n, 2))
    canvas = np.zeros((h, w), np.uint8)
    dist = np.linalg.norm(pts[:, None] - pts[None], axis=-1)
    reach = 0.55 * max(w, h)
    for i in range(n):
        for j in np.argsort(dist[i])[1:int(rng.integers(2, 4))]:
            if dist[i, j] > reach:
                continue
            steps = max(2, int(dist[i, j] / (4 * sc)))
            t = np.linspace(0, 1, steps + 1)[:, None]
            line = pts[i] + t * (pts[j] - pts[i])
            line[1:-1] += rng.normal(0, 1.2 * sc, (steps - 1, 2))
            cv2.polylines(canvas, [np.round(line).astype(np.int32)], False, 255, 1, cv2.LINE_AA)
    return canvas.astype(np.float32) / 255 * -rng.uniform(45, 85)


def _inclusion(rng, w, h, sc):
    canvas = np.zeros((h, w), np.uint8)
    for _ in range(int(rng.integers(1, 4))):
        ax = rng.uniform(w / 5, w / 2.1)
        ay = rng.uniform(1.2 * sc, max(1.5 * sc, h / 2.6))
        cx = rng.uniform(ax, max(ax, w - ax))
        cy = rng.uniform(ay, max(ay, h - ay))
        cv2.ellipse(canvas, (int(cx), int(cy)), (int(round(ax)), max(1, int(round(ay)))), rng.uniform(-10, 10), 0, 360,
                    255, -1, cv2.LINE_AA)
    layer = cv2.GaussianBlur(canvas.astype(np.float32) / 255, (0, 0), 0.7)
    return layer * -rng.uniform(55, 100)


def _patches(rng, w, h, sc):
    coarse = cv2.resize(rng.uniform(0, 1, (6, 6)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r2 = ((xx + 0.5) / w * 2 - 1) ** 2 + ((yy + 0.5) / h * 2 - 1) ** 2
    field = 0.8 * np.clip(coarse, 0, 1) + (1 - r2)  # <= 0.8 on the canvas border: the blob never touches it
    mask = np.clip((field - rng.uniform(0.85, 1.05)) * 5, 0, 1)
    mask = cv2.GaussianBlur(mask, (0, 0), 1.2 * sc)
    fine = cv2.GaussianBlur(rng.uniform(0, 1, (h, w)).astype(np.float32), (0, 0), 1.5 * sc)
    mask *= 0.65 + 0.7 * (fine - fine.mean())
    sign = -1.0 if rng.uniform() < 0.7 else 1.0
    return np.clip(mask, 0, 1) * sign * rng.uniform(40, 70)


def _pitted(rng, w, h, sc):
    dark = np.zeros((h, w), np.uint8)
    rim = np.zeros((h, w), np.uint8)
    n = int(np.clip(w * h / (60 * sc * sc), 8, 40))
    centres = rng.normal((w / 2, h / 2), (w / 4, h / 4), (n, 2))
    for cx, cy in centres:
        r = max(1, int(round(rng.uniform(1.0, 2.8) * sc)))
        cx, cy = int(np.clip(cx, r + 1, w - r - 2)), int(np.clip(cy, r + 1, h - r - 2))
        cv2.circle(rim, (cx + 1, cy + 1), r, 255, -1, cv2.LINE_AA)
        cv2.circle(dark, (cx, cy), r, 255, -1, cv2.LINE_AA)
    dark_f = dark.astype(np.float32) / 255
    rim_f = np.clip(rim.astype(np.float32) / 255 - dark_f, 0, 1)
    amp = rng.uniform(55, 95)
    return -dark_f * amp + rim_f * amp * 0.35


def _rolled_in_scale(rng, w, h, sc):
    layer = np.zeros((h, w), np.float32)
    n = int(np.clip(w * h / (110 * sc * sc), 12, 45))
    base = rng.uniform(40, 75)
    for _ in range(n):
        length, height = rng.uniform(3, 8) * sc, rng.uniform(1.0, 2.4) * sc
        cx, cy = rng.uniform(length, max(length, w - length)), rng.uniform(height + 1, max(height + 1, h - height - 1))
        ang = np.deg2rad(rng.uniform(-10, 10))
        k = int(rng.integers(5, 8))
        phi = np.sort(rng.uniform(0, 2 * np.pi, k))
        rad = rng.uniform(0.6, 1.0, k)
        px, py = np.cos(phi) * length * rad, np.sin(phi) * height * rad
        poly = np.stack([cx + px * np.cos(ang) - py * np.sin(ang), cy + px * np.sin(ang) + py * np.cos(ang)], 1)
        value = -base * rng.uniform(0.7, 1.2) if rng.uniform() < 0.75 else base * rng.uniform(0.4, 0.7)
        cv2.fillPoly(layer, [np.round(poly).astype(np.int32)], float(value))
    return cv2.GaussianBlur(layer, (0, 0), 0.5)


def _scratch(rng, w, h, sc, slope_sign):
    canvas = np.zeros((h, w), np.uint8)
    (x0, y0), (x1, y1) = ((0, 0), (w - 1, h - 1)) if slope_sign > 0 else ((0, h - 1), (w - 1, 0))
    n = 6
    t = np.linspace(0, 1, n + 1)
    bend = np.sin(t * np.pi) * rng.uniform(-2.5, 2.5) * sc
    norm = np.hypot(x1 - x0, y1 - y0) + 1e-6
    nx, ny = -(y1 - y0) / norm, (x1 - x0) / norm
    pts = np.stack([x0 + t * (x1 - x0) + bend * nx, y0 + t * (y1 - y0) + bend * ny], 1)
    thickness = 2 if rng.uniform() < 0.3 * sc else 1
    cv2.polylines(canvas, [np.round(pts).astype(np.int32)], False, 255, thickness, cv2.LINE_AA)
    sign = 1.0 if rng.uniform() < 0.65 else -1.0
    return canvas.astype(np.float32) / 255 * sign * rng.uniform(55, 100)


def _defect_size(rng, cls: int, size: int, sc: float):
    """Canvas (w, h) for one defect of class cls, plus drawer kwargs."""
    u = lambda lo, hi: int(round(rng.uniform(lo, hi) * size))  # noqa: E731
    if cls == 0:
        return u(0.25, 0.55), u(0.25, 0.55), {}
    if cls == 1:
        return u(0.12, 0.38), max(int(5 * sc), u(0.04, 0.12)), {}
    if cls == 2:
        return u(0.18, 0.45), u(0.18, 0.45), {}
    if cls == 3:
        return u(0.12, 0.32), u(0.12, 0.32), {}
    if cls == 4:
        return u(0.30, 0.70), u(0.10, 0.28), {}
    length = rng.uniform(0.35, 0.9) * size
    angle = np.deg2rad(rng.uniform(20, 70))
    w, h = length * np.cos(angle), length * np.sin(angle)
    if rng.uniform() < 0.5:  # steep or shallow
        w, h = h, w
    return max(4, int(w)), max(4, int(h)), {"slope_sign": 1 if rng.uniform() < 0.5 else -1}


_DRAWERS = (_crazing, _inclusion, _patches, _pitted, _rolled_in_scale, _scratch)


def _iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter + 1e-9)


def _augmenter(seed: int):
    """Image-only albumentations pipeline: texture, blur, noise, lighting (boxes are never touched)."""
    import albumentations as A

    if int(A.__version__.split(".")[0]) < 2:  # seed= and std_range= arrived in 2.0
        raise KDConfigError(f"{_WHAT}: albumentations {A.__version__} is too old (seeded pipelines need 2.x); run "
                            f"pip install 'albumentations>=2.0'")
    return A.Compose([
        A.OneOf([A.Sharpen(alpha=(0.1, 0.3), lightness=(0.9, 1.1)),
                 A.Emboss(alpha=(0.1, 0.3), strength=(0.2, 0.6)),
                 A.CLAHE(clip_limit=(1.0, 2.0), tile_grid_size=(4, 4))], p=0.5),
        A.OneOf([A.MotionBlur(blur_limit=(3, 3), angle_range=(0, 10), direction_range=(-1.0, 1.0)),
                 A.GaussianBlur(blur_limit=(3, 3), sigma_limit=(0.3, 0.8))], p=0.35),
        A.GaussNoise(std_range=(0.01, 0.035), per_channel=False, p=0.8),
        A.RandomBrightnessContrast(brightness_limit=0.15, contrast_limit=0.2, p=0.8),
        A.RandomGamma(gamma_limit=(85, 115), p=0.5),
    ], seed=seed)


def render_steel_image(seed_seq, imgsz: int = 200, augment=None):
    """Draw one grey steel image (uint8, imgsz x imgsz) and its defects [(cls, x1, y1, x2, y2), ...] in pixels."""
    rng = np.random.default_rng(seed_seq)
    size, sc = imgsz, imgsz / 200.0
    img = _background(rng, size)
    boxes: list[tuple[int, int, int, int, int]] = []
    for _ in range(int(rng.integers(1, _MAX_DEFECTS + 1))):
        cls = int(rng.integers(0, len(STEEL_NAMES)))
        for _attempt in range(25):
            w, h, kw = _defect_size(rng, cls, size, sc)
            w, h = min(max(w, 4), size - 2), min(max(h, 4), size - 2)
            x0, y0 = int(rng.integers(1, size - w)), int(rng.integers(1, size - h))
            if all(_iou((x0, y0, x0 + w, y0 + h), b[1:]) < _MAX_OVERLAP_IOU for b in boxes):
                break
        else:
            continue  # no free room for this defect: draw fewer
        layer = _DRAWERS[cls](rng, w, h, sc, **kw)
        strong = np.abs(layer) >= min(0.3 * float(np.abs(layer).max()), _VISIBLE)
        ys, xs = np.nonzero(strong)
        if xs.size == 0:
            continue
        img[y0:y0 + h, x0:x0 + w] += layer
        boxes.append((cls, x0 + int(xs.min()), y0 + int(ys.min()), x0 + int(xs.max()) + 1, y0 + int(ys.max()) + 1))
    out = np.clip(np.round(img), 0, 255).astype(np.uint8)
    if augment is not None:
        augment.set_random_seed(int(rng.integers(0, 2**31 - 1)))
        out = augment(image=out)["image"]
    if rng.uniform() < 0.5:  # rolling direction vertical: transpose image and boxes
        out = np.ascontiguousarray(out.T)
        boxes = [(c, y1, x1, y2, x2) for c, x1, y1, x2, y2 in boxes]
    return out, boxes


def make_steel_dataset(root, n_train: int = 200, n_val: int = 50, imgsz: int = 200, seed: int = 0,
                       overwrite: bool = False) -> Path:
    """Write a procedural NEU-DET-like steel defect dataset under root and return root/data.yaml.

    Layout: images/{train,val}/steel_00000.jpg (grey JPEG), labels/{train,val}/*.txt (`cls xc yc w h`, normalised),
    data.yaml with path/train/val/names. Same arguments -> byte-identical files. An existing root/data.yaml is
    reused as is unless overwrite=True.
    """
    n_train = positive_int(n_train, "n_train", _WHAT)
    n_val = positive_int(n_val, "n_val", _WHAT)
    imgsz = positive_int(imgsz, "imgsz", _WHAT, minimum=64)
    seed = positive_int(seed, "seed", _WHAT, minimum=0)
    root = prepare_root(root, _WHAT)
    header = stamp(generator="steel", n_train=n_train, n_val=n_val, imgsz=imgsz, seed=seed)
    existing = reuse_existing(root, bool(overwrite), header, _WHAT)
    if existing is not None:
        return existing

    split_dirs(root)
    augment = _augmenter(seed)
    counts = np.zeros(len(STEEL_NAMES), int)
    for split_id, (split, n) in enumerate((("train", n_train), ("val", n_val))):
        for i in range(n):
            img, boxes = render_steel_image([seed, split_id, i], imgsz, augment)
            stem = f"steel_{i:05d}"
            cv2.imwrite(str(root / "images" / split / f"{stem}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 95])
            lines = [yolo_line(c, b, imgsz, imgsz) for c, *b in boxes]
            (root / "labels" / split / f"{stem}.txt").write_text("\n".join(lines) + "\n")
            for c, *_ in boxes:
                counts[c] += 1
    data = write_data_yaml(root, STEEL_NAMES, header)
    LOGGER.info("%s: wrote %d train + %d val images (%d px) to %s; boxes per class: %s", _WHAT, n_train, n_val, imgsz,
                root, ", ".join(f"{n}={c}" for n, c in zip(STEEL_NAMES, counts)))
    return data
