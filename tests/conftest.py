"""Shared fixtures: a tiny detection dataset made on the fly and a tiny teacher trained on it with stock Ultralytics.

Everything is offline and small (64 px images, a few images, 1 epoch) so the suite runs on a 2-core CPU.
"""

import csv
import os
import socket
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

os.environ.setdefault("YOLO_OFFLINE", "1")

if os.environ.get("PYTEST_XDIST_WORKER"):  # `pytest -n N`: the workers share the cores, and so do their children
    _cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1  # not macOS
    _threads = max(1, _cores // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    os.environ["OMP_NUM_THREADS"] = str(_threads)
    torch.set_num_threads(_threads)

TINY_NAMES = ["square", "disc"]


def make_tiny_dataset(root: Path, n_train: int = 8, n_val: int = 4, imgsz: int = 64, seed: int = 0) -> Path:
    """Write a two-class YOLO dataset (filled squares and discs on noise) and return its data.yaml."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = rng.integers(0, 60, (imgsz, imgsz, 3), dtype=np.uint8)
            lines = []
            for _ in range(int(rng.integers(1, 4))):
                cls = int(rng.integers(0, 2))
                s = int(rng.integers(imgsz // 6, imgsz // 3))
                x, y = (int(v) for v in rng.integers(0, imgsz - s, 2))
                color = tuple(int(c) for c in rng.integers(150, 255, 3))
                if cls == 0:
                    cv2.rectangle(img, (x, y), (x + s, y + s), color, -1)
                else:
                    cv2.circle(img, (x + s // 2, y + s // 2), s // 2, color, -1)
                lines.append(f"{cls} {(x + s / 2) / imgsz:.6f} {(y + s / 2) / imgsz:.6f} {s / imgsz:.6f} {s / imgsz:.6f}")
            cv2.imwrite(str(root / "images" / split / f"{i:03d}.jpg"), img)
            (root / "labels" / split / f"{i:03d}.txt").write_text("\n".join(lines) + "\n")
    data = root / "data.yaml"
    names = "\n".join(f"  {i}: {n}" for i, n in enumerate(TINY_NAMES))
    data.write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n{names}\n")
    return data


#: Ultralytics arguments every tiny training uses: CPU, no plots, one optimizer step per batch, deterministic.
TINY_TRAIN = dict(imgsz=64, batch=4, nbs=4, workers=0, device="cpu", plots=False, seed=0, deterministic=True,
                  mosaic=0.0, amp=False, verbose=False)


#: The last lines of a gloo worker script: every rank waits for the others, then leaves without gloo's teardown,
#: which can abort one rank at interpreter exit ("terminate called without an active exception", return code -6).
DDP_WORKER_EXIT = """
dist.barrier()
sys.stdout.flush()
os._exit(0)
"""


def run_gloo_ranks(script: Path, args: list[str], world: int = 2, timeout: int = 180) -> None:
    """Run `python script <rank> *args` as `world` gloo ranks on a free local port; assert that every rank exits 0
    (the failing ranks' last output in the message)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, str(script), str(rank), *args], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for rank in range(world)]
    try:
        logs = [p.communicate(timeout=timeout)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0] * world, "\n".join(log[-2000:] for log in logs)


def read_results(path: Path) -> list[dict]:
    """Rows of an Ultralytics results.csv (a run folder or the file itself), keys and values stripped."""
    path = Path(path)
    with open(path / "results.csv" if path.is_dir() else path) as f:
        return [{k.strip(): v.strip() for k, v in row.items()} for row in csv.DictReader(f)]


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """data.yaml of the shared tiny dataset (8 train, 4 val images, 64 px, 2 classes)."""
    return make_tiny_dataset(tmp_path_factory.mktemp("tiny_data"))


def train_tiny(tmp_path_factory, cfg: str, data: Path, epochs: int, name: str, **overrides) -> Path:
    """Train `cfg` on the tiny dataset with stock Ultralytics (TINY_TRAIN, then `overrides`); return its best.pt."""
    from ultralytics import YOLO

    from yolo_kd.offline import install_local_fonts

    install_local_fonts()
    project = tmp_path_factory.mktemp(f"{name}_runs")
    YOLO(cfg).train(data=str(data), epochs=epochs, project=str(project), name=name, **{**TINY_TRAIN, **overrides})
    return project / name / "weights" / "best.pt"


@pytest.fixture(scope="session")
def tiny_teacher(tiny_data, tmp_path_factory) -> Path:
    """best.pt of a yolov8s-width teacher trained 2 epochs on the tiny dataset with stock Ultralytics."""
    return train_tiny(tmp_path_factory, "yolov8s.yaml", tiny_data, 2, "teacher")


@pytest.fixture(scope="session")
def tiny_student_ckpt(tiny_data, tmp_path_factory) -> Path:
    """best.pt of a yolov8n student trained 1 epoch without distillation (for eval/export tests)."""
    return train_tiny(tmp_path_factory, "yolov8n.yaml", tiny_data, 1, "student")


@pytest.fixture(scope="session")
def tiny_teacher_b(tiny_data, tmp_path_factory) -> Path:
    """A second teacher of another family and width (yolo11n) for multi-teacher tests."""
    return train_tiny(tmp_path_factory, "yolo11n.yaml", tiny_data, 2, "teacher_b")


GREEN = (0, 255, 0)  # BGR: no tiny-data image has a pure green pixel; their backgrounds are dark in every channel


@pytest.fixture(scope="session")
def tiny_pool(tmp_path_factory) -> Path:
    """A folder of 6 unlabeled 64 px images: pure green with a few grey discs (PNG, so the colours stay exact)."""
    root = tmp_path_factory.mktemp("pool") / "pool"
    root.mkdir()
    rng = np.random.default_rng(3)
    for i in range(6):
        img = np.zeros((64, 64, 3), np.uint8)
        img[:] = GREEN
        for _ in range(2):
            cv2.circle(img, tuple(int(v) for v in rng.integers(10, 54, 2)), 6, (200, 200, 200), -1)
        cv2.imwrite(str(root / f"u{i}.png"), img)
    return root
