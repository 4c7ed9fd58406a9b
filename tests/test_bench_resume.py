"""A bench cut off in the middle of a yolo-kd row (a real SIGKILL after an epoch's last.pt) resumes that row when run
again: the resumed row ends with the uninterrupted row's results and keeps the cut-off epochs' times; another job in
the folder, other code or a checkpoint past its last epoch start over. A run whose process is still training in its
folder is not started a second time."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch
from conftest import TINY_TRAIN, read_results

from yolo_kd import KDConfigError
from yolo_kd.bench.runs import PROGRESS, RUNNING, Job, cut_off_epochs, launch

EPOCHS = 3

#: the bench's own subprocess entry, killed right after epoch 2's last.pt is written (a default callback: every
#: model built in this process gets it)
CUT_SCRIPT = """
import os, signal, sys
from ultralytics.utils.callbacks import base


def cut(trainer):
    if trainer.epoch == 1:
        os.kill(os.getpid(), signal.SIGKILL)


base.default_callbacks["on_model_save"].append(cut)
from yolo_kd.bench.runs import main

main(sys.argv[1])
"""


def distilled_job(project, data, teacher) -> Job:
    """A yolo-kd row at the bench's settings (no validation), scored from its last.pt (the tiny run's fitness may
    stay 0, so no best.pt is written)."""
    train_args = {**TINY_TRAIN, "data": str(data), "epochs": EPOCHS, "val": False, "exist_ok": True,
                  "project": str(project), "name": "kd_s0"}
    return Job(label="kd", kind="yolo-kd", model="yolov8n.yaml", seed=0, train_args=train_args,
               kd={"teacher": str(teacher)}, eval_imgsz=64, scored="last")


def same_row(a: dict, b: dict) -> list[str]:
    """results.csv columns (all but the wall time) whose values differ at 4 decimals."""
    return [k for k in a if k != "time" and round(float(a[k]), 4) != round(float(b[k]), 4)]


def cut_off_run(job: Job, tmp_path: Path) -> None:
    """Run `job` as the bench's subprocess does and kill it after epoch 2's checkpoint."""
    job.folder.mkdir(parents=True)
    (job.folder / "job.json").write_text(json.dumps(asdict(job)))
    script = tmp_path / "cut.py"
    script.write_text(CUT_SCRIPT)
    out = subprocess.run([sys.executable, str(script), str(job.folder / "job.json")], capture_output=True, text=True,
                         timeout=600, env={**os.environ, "YOLO_OFFLINE": "1"})
    assert out.returncode == -signal.SIGKILL, out.stderr[-3000:]
    assert [r["epoch"] for r in read_results(job.folder)] == ["1", "2"] and not (job.folder / "result.json").exists()


def test_a_cut_off_yolo_kd_row_resumes_to_the_uninterrupted_result(tiny_data, tiny_teacher, tmp_path):
    whole = launch(distilled_job(tmp_path / "whole", tiny_data, tiny_teacher))
    assert whole["resumed_after_epoch"] is None and whole["train_wall_seconds"] > 0
    job = distilled_job(tmp_path / "cut", tiny_data, tiny_teacher)
    cut_off_run(job, tmp_path)
    assert (job.folder / RUNNING).is_file()  # the killed process's marker stays behind; its id is no longer live
    timed = json.loads((job.folder / PROGRESS).read_text())["epoch_seconds"]
    assert cut_off_epochs(job) == 2

    resumed = launch(job)
    assert f"from epoch 3 to {EPOCHS} total epochs" in (job.folder / "bench.log").read_text()
    assert resumed["resumed_after_epoch"] == 2 and resumed["train_wall_seconds"] is None
    assert resumed["epoch_seconds"][:2] == timed[:2] and len(resumed["epoch_seconds"]) == EPOCHS
    rows = read_results(job.folder)
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert same_row(rows[-1], read_results(tmp_path / "whole" / "kd_s0")[-1]) == []
    assert cut_off_epochs(job) is None  # finished: its last.pt no longer holds the continuation
    assert not (job.folder / RUNNING).exists()


def test_what_is_not_this_cut_off_run_starts_over(tiny_data, tiny_teacher, tmp_path):
    """Another job in the folder, other code, a checkpoint of the last epoch or a cut-off checkpoint: None. A job
    launched into the folder of another job's cut-off run takes its last.pt away first, so a later launch of either
    cannot resume the other's (here with `false` as the interpreter, so the launch fails once the folder is set)."""
    job = distilled_job(tmp_path / "cut", tiny_data, tiny_teacher)
    cut_off_run(job, tmp_path)
    assert cut_off_epochs(job) == 2
    other = replace(job, train_args={**job.train_args, "epochs": EPOCHS + 1})
    assert cut_off_epochs(other) is None
    progress, last = job.folder / PROGRESS, job.folder / "weights" / "last.pt"
    saved = progress.read_text()
    progress.write_text(json.dumps({**json.loads(saved), "code": "yolo-kd 0.0.0 (git 0000000)"}))
    assert cut_off_epochs(job) is None
    progress.write_text(saved)
    ckpt = torch.load(last, map_location="cpu", weights_only=False)
    original = last.read_bytes()
    torch.save({**ckpt, "epoch": EPOCHS - 1}, last)  # as if killed after the last epoch's checkpoint
    assert cut_off_epochs(job) is None
    last.write_bytes(original[: len(original) // 2])  # as if killed while the checkpoint was written
    assert cut_off_epochs(job) is None
    last.write_bytes(original)
    assert cut_off_epochs(job) == 2

    with pytest.raises(RuntimeError, match="bench run 'kd' seed 0 failed"):
        launch(other, python="false")
    assert not last.exists() and not progress.exists()
    assert cut_off_epochs(job) is None


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="processes are told apart by /proc")
def test_a_run_still_training_in_its_folder_is_refused(tmp_path):
    """A live process named by the folder's marker whose command line names the folder's job: refused in one line
    naming it, before anything is written. A live process that is not that job's (an id reused since) and a finished
    one are not in the way: the run starts (with `false` as the interpreter, so it fails at once instead of
    training)."""
    job = Job(label="x", kind="baseline", model="m.yaml", seed=1, train_args={"project": str(tmp_path), "name": "x"})
    job.folder.mkdir(parents=True)
    bench_like = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", str(job.folder / "job.json")])
    try:
        while b"job.json" not in Path(f"/proc/{bench_like.pid}/cmdline").read_bytes():  # until it has exec'd
            time.sleep(0.05)
        (job.folder / RUNNING).write_text(str(bench_like.pid))
        with pytest.raises(KDConfigError, match=rf"still training in process {bench_like.pid} .*kill {bench_like.pid}"):
            launch(job, python="false")
        assert not (job.folder / "job.json").exists()
    finally:
        bench_like.kill()
        bench_like.wait()
    for pid in (bench_like.pid, os.getpid()):  # gone; alive but not this job's
        (job.folder / RUNNING).write_text(str(pid))
        with pytest.raises(RuntimeError, match="bench run 'x' seed 1 failed"):
            launch(job, python="false")
