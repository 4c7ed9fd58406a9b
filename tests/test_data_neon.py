"""NEON tree-crown tiling: the tile rule on a synthetic wheel, split by source image, and the real deepforest wheel."""

import os
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from yolo_kd.data import neon
from yolo_kd.data.neon import NEON_IMAGES, prepare_neon_trees, tile_boxes, tile_origins
from yolo_kd.errors import KDConfigError

os.environ.setdefault("YOLO_OFFLINE", "1")

#: synthetic stand-ins for the four wheel images: size and boxes (xmin, ymin, xmax, ymax as 0-based pixel edges)
SYNTH = {
    NEON_IMAGES[0]: ((250, 210), [(10, 10, 40, 40), (150, 20, 190, 60), (20, 120, 60, 190),  # fully inside a tile
                                  (90, 10, 130, 30),    # 25 % in tile x0=0, 75 % in tile x0=100
                                  (80, 50, 120, 70),    # exactly half in each of two tiles
                                  (205, 202, 230, 209),  # fully inside the padded corner tile
                                  (95, 95, 105, 105)]),  # a quarter in each of four tiles: kept nowhere
    NEON_IMAGES[1]: ((120, 100), [(5, 5, 30, 30), (60, 60, 110, 95)]),
    NEON_IMAGES[2]: ((100, 100), [(0, 0, 100, 100), (30, 30, 60, 50)]),
    NEON_IMAGES[3]: ((100, 100), [(10, 10, 20, 20), (70, 70, 90, 90)]),
}


def _xml(stem, size, boxes, name="Tree"):
    objs = "".join(f"<object><name>{'Dead' if (stem == 'SOAP_061' and i % 2) else name}</name><bndbox>"
                   f"<xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax><ymax>{d}</ymax></bndbox></object>"
                   for i, (a, b, c, d) in enumerate(boxes))
    return (f"<annotation><filename>{stem}.png</filename><size><width>{size[0]}</width><height>{size[1]}</height>"
            f"<depth>3</depth></size>{objs}</annotation>")


@pytest.fixture(scope="module")
def fake_wheel(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("wheel") / neon.DEEPFOREST_WHEEL
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(path, "w") as zf:
        for stem, (size, boxes) in SYNTH.items():
            img = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
            zf.writestr(f"deepforest/data/{stem}.png", cv2.imencode(".png", img)[1].tobytes())
            zf.writestr(f"deepforest/data/{stem}.xml", _xml(stem, size, boxes))
        zf.writestr("deepforest/data/SOAP_031.png", b"not annotated: ignored")
    return path


def _expected(size, boxes, tile, min_visible, edge="pad"):
    """Independent tile rule: {tile origin: sorted clipped local boxes} by brute force over all tiles."""
    out = {}
    for y0 in tile_origins(size[1], tile, 0, edge):
        for x0 in tile_origins(size[0], tile, 0, edge):
            kept = []
            for a, b, c, d in boxes:
                iw = max(0, min(c, x0 + tile) - max(a, x0))
                ih = max(0, min(d, y0 + tile) - max(b, y0))
                if iw * ih > 0 and iw * ih >= min_visible * (c - a) * (d - b):
                    kept.append((max(a, x0) - x0, max(b, y0) - y0, min(c, x0 + tile) - x0, min(d, y0 + tile) - y0))
            out[(x0, y0)] = sorted(kept)
    return out


def _read(root: Path, split: str, tile: int) -> dict:
    """{(stem, x0, y0): sorted pixel boxes} from the written labels."""
    out = {}
    for p in sorted((root / "labels" / split).glob("*.txt")):
        stem, y, x = p.stem.rsplit("_", 2)
        rows = np.array([[float(v) for v in line.split()] for line in p.read_text().splitlines()]).reshape(-1, 5)
        assert np.all(rows[:, 0] == 0)
        assert np.all(rows[:, 1:] >= 0) and np.all(rows[:, 1:] <= 1)
        assert np.all(rows[:, 1] - rows[:, 3] / 2 >= -1e-6) and np.all(rows[:, 1] + rows[:, 3] / 2 <= 1 + 1e-6)
        assert np.all(rows[:, 2] - rows[:, 4] / 2 >= -1e-6) and np.all(rows[:, 2] + rows[:, 4] / 2 <= 1 + 1e-6)
        boxes = [tuple(round(v * tile, 3) for v in (xc - w / 2, yc - h / 2, xc + w / 2, yc + h / 2))
                 for _, xc, yc, w, h in rows]
        out[(stem, int(x[1:]), int(y[1:]))] = sorted(boxes)
        assert (root / "images" / split / f"{p.stem}.png").is_file()
    return out


def test_tile_origins():
    assert tile_origins(1249, 400) == [0, 400, 800, 1200]
    assert tile_origins(1249, 400, edge="shift") == [0, 400, 800, 849]
    assert tile_origins(800, 400) == tile_origins(800, 400, edge="shift") == [0, 400]
    assert tile_origins(300, 400) == tile_origins(300, 400, edge="shift") == [0]
    assert tile_origins(1000, 400, overlap=100) == [0, 300, 600]
    assert tile_origins(1100, 400, overlap=100, edge="shift") == [0, 300, 600, 700]


def test_tile_boxes_rule():
    boxes = np.array([[10, 10, 30, 30], [90, 0, 110, 10], [95, 0, 105, 10]], float)
    np.testing.assert_allclose(tile_boxes(boxes, 0, 0, 100, 100, 0.5), [[10, 10, 30, 30], [90, 0, 100, 10],
                                                                       [95, 0, 100, 10]])
    np.testing.assert_allclose(tile_boxes(boxes, 0, 0, 100, 100, 0.6), [[10, 10, 30, 30]])
    np.testing.assert_allclose(tile_boxes(boxes, 100, 0, 200, 100, 0.5), [[0, 0, 10, 10], [0, 0, 5, 10]])


def test_synthetic_wheel_tiles_and_split(fake_wheel, tmp_path):
    val = ("OSBS_029", "SOAP_061")
    data = prepare_neon_trees(tmp_path / "neon", tile=100, val_images=",".join(val), min_visible=0.5,
                              wheel=fake_wheel)
    root = data.parent
    train, valid = _read(root, "train", 100), _read(root, "val", 100)
    assert {k[0] for k in train} == set(NEON_IMAGES) - set(val)
    assert {k[0] for k in valid} == set(val)  # split by source image: no tile of a val image in train
    for stem, (size, boxes) in SYNTH.items():
        written = {(x, y): b for (s, x, y), b in {**train, **valid}.items() if s == stem}
        assert written == _expected(size, boxes, 100, 0.5), stem
    big = {(x, y): b for (s, x, y), b in train.items() if s == NEON_IMAGES[0]}
    assert len(big) == 9  # 250 x 210 -> 3 x 3 tiles of 100, last row/col padded
    # every box fully inside one tile appears exactly once; cut boxes only where >= half of them is visible
    flat = [b for v in big.values() for b in v]
    assert len(flat) == 4 + 1 + 2 + 0 + 0
    assert big[(100, 0)][0] == (0, 10, 30, 30) and (90, 10, 100, 30) not in big[(0, 0)]
    # padding is Ultralytics' letterbox grey
    corner = cv2.imread(str(root / "images" / "train" / f"{NEON_IMAGES[0]}_y00200_x00200.png"))
    assert corner.shape == (100, 100, 3) and np.all(corner[10:, :] == 114) and np.all(corner[:, 50:] == 114)
    # data.yaml: one class, loadable by Ultralytics
    from ultralytics.data.utils import check_det_dataset

    from yolo_kd.offline import install_local_fonts

    install_local_fonts()
    info = check_det_dataset(str(data))
    assert info["nc"] == 1 and info["names"][0] == "tree"


def test_overlap_and_shift(fake_wheel, tmp_path):
    data = prepare_neon_trees(tmp_path / "neon", tile=100, overlap=20, edge="shift", wheel=fake_wheel)
    train = _read(data.parent, "train", 100)
    big = {(x, y) for s, x, y in train if s == NEON_IMAGES[0]}
    assert big == {(x, y) for x in (0, 80, 150) for y in (0, 80, 110)}
    size, boxes = SYNTH[NEON_IMAGES[0]]
    for (s, x0, y0), written in train.items():
        if s == NEON_IMAGES[0]:
            for a, b, c, d in boxes:  # a box fully inside a tile is always in it
                if a >= x0 and b >= y0 and c <= x0 + 100 and d <= y0 + 100:
                    assert (a - x0, b - y0, c - x0, d - y0) in written


def test_reuse_cache_and_errors(fake_wheel, tmp_path, monkeypatch):
    root = tmp_path / "neon"
    cache = root / "_cache"
    cache.mkdir(parents=True)
    (cache / neon.DEEPFOREST_WHEEL).write_bytes(fake_wheel.read_bytes())

    def no_pip(*a, **k):
        raise AssertionError("pip must not run when the wheel is cached")

    monkeypatch.setattr(neon.subprocess, "run", no_pip)
    data = prepare_neon_trees(root, tile=100)  # reads root/_cache, no download
    mtime = data.stat().st_mtime_ns
    assert prepare_neon_trees(root, tile=100) == data and data.stat().st_mtime_ns == mtime  # reused
    for kwargs, match in [(dict(val_images="nope"), "val_images"), (dict(val_images=list(NEON_IMAGES)), "val_images"),
                          (dict(overlap=100, tile=100), "overlap"), (dict(min_visible=0), "min_visible"),
                          (dict(edge="wrap"), "edge")]:
        with pytest.raises(KDConfigError, match=match):
            prepare_neon_trees(tmp_path / "bad", wheel=fake_wheel, **kwargs)


def test_real_deepforest_wheel(tmp_path):
    """Fetch deepforest==2.1.0 from PyPI with pip (about 21 MB) and tile its real NEON images (defaults)."""
    try:
        data = prepare_neon_trees(tmp_path / "neon")
    except KDConfigError as e:
        if "pip download" in str(e):
            pytest.skip(f"PyPI not reachable: {e}")
        raise
    root = data.parent
    assert (root / "_cache" / neon.DEEPFOREST_WHEEL).is_file()
    counts = {}
    for split in ("train", "val"):
        labels = sorted((root / "labels" / split).glob("*.txt"))
        counts[split] = (len(labels), sum(len(p.read_text().splitlines()) for p in labels))
        assert len(list((root / "images" / split).glob("*.png"))) == len(labels)
    # train: YELL 528000 crop2 (2299 x 2472 -> 6 x 7 tiles), OSBS_029 and SOAP_061 (1 tile each); val: YELL 541000
    # crop (1249 x 1035 -> 4 x 3 tiles). Boxes: 672 -> 666 and 279 -> 276 (crowns cut by tile borders)
    assert counts == {"train": (44, 666), "val": (12, 276)}
    val_stems = {p.stem.rsplit("_", 2)[0] for p in (root / "labels" / "val").glob("*.txt")}
    train_stems = {p.stem.rsplit("_", 2)[0] for p in (root / "labels" / "train").glob("*.txt")}
    assert val_stems == set(neon.NEON_VAL_IMAGES) and not val_stems & train_stems
