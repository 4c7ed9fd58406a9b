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


def wide_dataset(tiny_data: Path, root: Path) -> Path:
    """The tiny data set with each image placed beside the next (128x64): non-square, so rect batching matters."""
    import cv2
    import numpy as np

    for split in ("train", "val"):
        images = sorted((tiny_data.parent / "images" / split).glob("*.jpg"))
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i, left in enumerate(images):
            right = images[(i + 1) % len(images)]
            cv2.imwrite(str(root / "images" / split / left.name),
                        np.concatenate([cv2.imread(str(left)), cv2.imread(str(right))], axis=1))
            lines = []
            for side, image in enumerate((left, right)):
                for row in (tiny_data.parent / "labels" / split / f"{image.stem}.txt").read_text().split("\n"):
                    if row.strip():
                        c, x, y, w, h = row.split()
                        lines.append(f"{c} {(float(x) + side) / 2:.6f} {y} {float(w) / 2:.6f} {h}")
            (root / "labels" / split / f"{left.stem}.txt").write_text("\n".join(lines) + "\n")
    data = root / "data.yaml"
    data.write_text(tiny_data.read_text().replace(str(tiny_data.parent), str(root)))
    return data


def test_export_and_val_score_a_checkpoint_alike(tiny_teacher, tiny_data, tmp_path, capsys):
    """export scores at rect=False and says so beside its table; `yolo-kd val rect=False` then gives the same
    detections (so the same score), and val's default (rect=True, as Ultralytics) gives other ones on wide images."""
    import json
    import shutil

    from yolo_kd.evaluation import val_command
    from yolo_kd.export import export_command

    data = wide_dataset(tiny_data, tmp_path / "wide")
    ckpt = shutil.copy(tiny_teacher, tmp_path / "teacher.pt")
    exported = export_command({"model": ckpt, "format": "onnx", "data": str(data), "runs": 0,
                               "project": str(tmp_path / "export"), "name": "e"})
    assert "scores use rect=False" in capsys.readouterr().out
    scores = {}
    for rect in (False, True):
        scores[rect] = val_command({"model": ckpt, "data": str(data), "rect": rect, "project": str(tmp_path / "val"),
                                    "name": f"rect{rect}"})["models"]["teacher"]
    ours = exported["models"]["pytorch"]
    detections = {k: json.loads(Path(v["predictions"]).read_text()) for k, v in
                  {"export": ours, "val": scores[False], "val_rect": scores[True]}.items()}
    assert len(detections["export"]) > 0
    assert detections["val"] == detections["export"] and scores[False]["coco"] == ours["coco"]
    assert scores[False]["ultralytics"]["mAP50-95"] == ours["ultralytics"]["mAP50-95"]
    assert detections["val_rect"] != detections["export"]  # the reason the note gives is real


def test_val_names_a_model_by_its_run_only_for_run_checkpoints():
    from yolo_kd.evaluation.validate import model_labels

    assert model_labels(["clone/weights/defect_teacher.pt", "runs/kd/exp/weights/best.pt", "student.pt"]) == [
        "defect_teacher", "exp", "student"]
    assert model_labels(["runs/exp/weights/best.pt", "runs/exp/weights/last.pt"]) == ["exp/best", "exp/last"]


@pytest.mark.parametrize("command", ["train", "val", "export", "label", "demo"])
def test_every_help_key_has_a_description(command):
    from yolo_kd.cli import command_help

    keys = [ln.split() for ln in command_help(command).splitlines() if ln.startswith("  ") and "(" in ln]
    assert len(keys) > 3 and all(len(words) > 2 for words in keys), [w for w in keys if len(w) <= 2]


def test_ctrl_c_in_train_says_where_last_pt_is_and_how_to_resume(tmp_path, tiny_data, tiny_teacher):
    run = tmp_path / "runs" / "cc"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "YOLO_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "yolo_kd.cli", "train", "model=yolov8n.yaml", f"teacher={tiny_teacher}",
           f"data={tiny_data}", "epochs=200", f"project={tmp_path / 'runs'}", "name=cc", *tiny_args()]
    # a child of a background job may inherit SIGINT ignored; reset it, as in a terminal
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 300
    while not (run / "weights" / "last.pt").is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)  # into the next epoch
    assert proc.poll() is None, "training ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    last = run / "weights" / "last.pt"
    assert proc.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr + stdout, stderr[-3000:]
    assert stderr.strip().splitlines()[-1] == (f"yolo-kd train: interrupted: the last finished epoch is saved in "
                                               f"{last}; resume with: yolo-kd train resume={last}")
    assert last.is_file()
