"""Issue 21, user mistakes: each ends in one line and exit 2 (or 130 for Ctrl-C), and nothing earlier is changed."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TINY_TRAIN
from ultralytics import YOLO

import yolo_kd
from yolo_kd import KDConfigError

ROOT = Path(__file__).parents[1]


def cli(*args, **popen) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "YOLO_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "yolo_kd.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300, **popen)


def one_error_line(out: subprocess.CompletedProcess, command: str) -> str:
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert out.returncode == 2, out.stderr[-3000:]
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert lines[0].startswith(f"yolo-kd {command}: error: ")
    return lines[0]


def tiny_args() -> list[str]:
    return [f"{k}={v}" for k, v in TINY_TRAIN.items()]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("data", ["missing/data.yaml", "no_such_dataset"])
def test_wrong_data_path_leaves_an_existing_run_untouched(tmp_path, tiny_teacher, data):
    run = tmp_path / "runs" / "exp"
    (run / "weights").mkdir(parents=True)
    (run / "args.yaml").write_text("data: /real/data.yaml\nepochs: 100\n")
    (run / "weights" / "last.pt").write_bytes(b"weights of an earlier run")
    before = snapshot(tmp_path / "runs")
    out = cli("train", "model=yolov8n.yaml", f"teacher={tiny_teacher}", f"data={data}", "epochs=1",
              f"project={tmp_path / 'runs'}", "name=exp", "exist_ok=True", *tiny_args())
    line = one_error_line(out, "train")
    assert f"data={data} not found" in line and "data.yaml" in line
    assert snapshot(tmp_path / "runs") == before and [p.name for p in (tmp_path / "runs").iterdir()] == ["exp"]


def test_shipped_dataset_without_its_images_offline_is_refused(tmp_path, tiny_teacher):
    model = YOLO("yolov8n.yaml")
    yolo_kd.distill(model, teacher=str(tiny_teacher))
    with pytest.raises(KDConfigError, match="data=coco8.yaml is a dataset Ultralytics ships.*downloads are off"):
        model.train(data="coco8.yaml", epochs=1, project=str(tmp_path / "runs"), name="x", **TINY_TRAIN)
    assert not (tmp_path / "runs").exists()


def test_segment_student_is_refused_in_one_line(tmp_path, tiny_data, tiny_teacher):
    out = cli("train", "model=yolov8n-seg.yaml", f"teacher={tiny_teacher}", f"data={tiny_data}", "epochs=1",
              f"project={tmp_path / 'runs'}", "name=seg", *tiny_args())
    line = one_error_line(out, "train")
    assert "'segment' model" in line and "detection only" in line and "yolov8n.yaml" in line
    assert not (tmp_path / "runs").exists()


def test_segment_yaml_forced_to_detect_is_refused_by_its_head(tmp_path, tiny_data, tiny_teacher):
    model = YOLO("yolov8n-seg.yaml", task="detect")
    yolo_kd.distill(model, teacher=str(tiny_teacher))
    with pytest.raises(KDConfigError, match="has a Segment head \\('segment' model\\)"):
        model.train(data=str(tiny_data), epochs=1, project=str(tmp_path / "runs"), name="x", **TINY_TRAIN)
    assert not (tmp_path / "runs").exists()


def test_demo_accepts_the_overwrite_its_reuse_message_names(tmp_path):
    from yolo_kd.data.domains import make_domain_data

    data = make_domain_data("defect", tmp_path / "data", n_train=2, n_val=1, seed=0)
    stray = data.parent / "images" / "train" / "stray.jpg"
    stray.write_bytes(b"left from an older build")
    assert make_domain_data("defect", tmp_path / "data", n_train=2, n_val=1, seed=0) == data and stray.exists()
    make_domain_data("defect", tmp_path / "data", n_train=2, n_val=1, seed=0, overwrite=True)
    assert not stray.exists() and len(list((data.parent / "images" / "train").iterdir())) == 2
    line = one_error_line(cli("demo", "overwrite=True", "profile=nope", cwd=tmp_path), "demo")
    assert "unknown profile 'nope'" in line  # overwrite= itself was accepted
    assert "overwrite='maybe' is not a boolean" in one_error_line(cli("demo", "overwrite=maybe", cwd=tmp_path), "demo")
