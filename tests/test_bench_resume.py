"""A bench cut off in the middle of a yolo-kd row (a real SIGKILL after an epoch's last.pt) resumes that row when run
again: the resumed row ends with the uninterrupted row's results and keeps the cut-off epochs' times and peak memory;
another job in the folder, other code or a checkpoint past its last epoch start over. A run whose process is still
training in its folder is not started a second time: not while its bench runs, and not after that bench was killed and
left its run training."""

import contextlib
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
from yolo_kd.bench.runs import LOCK, PROGRESS, Job, cut_off_epochs, launch

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
    progress = json.loads((job.folder / PROGRESS).read_text())
    timed = progress["epoch_seconds"]
    assert 0 < progress["peak_mem_mb"] < 1e6
    (job.folder / PROGRESS).write_text(json.dumps({**progress, "peak_mem_mb": 1e6}))  # as if the cut-off one peaked
    assert cut_off_epochs(job) == 2

    resumed = launch(job)
    assert f"from epoch 3 to {EPOCHS} total epochs" in (job.folder / "bench.log").read_text()
    assert resumed["resumed_after_epoch"] == 2 and resumed["train_wall_seconds"] is None
    assert resumed["epoch_seconds"][:2] == timed[:2] and len(resumed["epoch_seconds"]) == EPOCHS
    assert resumed["peak_mem_mb"] == 1e6 and 0 < whole["peak_mem_mb"] < 1e6  # the higher of the two processes'
    rows = read_results(job.folder)
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert same_row(rows[-1], read_results(tmp_path / "whole" / "kd_s0")[-1]) == []
    assert cut_off_epochs(job) is None  # finished: its last.pt no longer holds the continuation


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


#: a bench's run that trains for a while (what `launch` starts with it as the interpreter); exec: the process
#: named in the lock is the one that holds it
SLOW_RUN = "#!/bin/sh\nexec sleep 600\n"

#: a bench process launching one job with a given interpreter (argv: job.json, interpreter)
BENCH = ("import json, sys; from yolo_kd.bench.runs import Job, launch; "
         "launch(Job(**json.loads(open(sys.argv[1]).read())), python=sys.argv[2])")


def held_by(job: Job, not_pid: int) -> int:
    """The process id the folder's lock names, once it names another process than `not_pid`."""
    for _ in range(600):
        text = (job.folder / LOCK).read_text() if (job.folder / LOCK).is_file() else ""
        if text and int(text) != not_pid:
            return int(text)
        time.sleep(0.05)
    raise AssertionError("the run's process never took the lock")


@pytest.mark.skipif(sys.platform == "win32", reason="no flock on Windows: the bench does not lock its folders")
def test_a_run_still_training_in_its_folder_is_refused(tmp_path):
    """While a bench runs a job, a second bench on the same job is refused in one line naming the run's process,
    before anything is written; so is one after the first bench was killed (SIGKILL) and left its run training. Once
    that process is gone the job starts (here it fails at once: `false` as the interpreter)."""
    job = Job(label="x", kind="baseline", model="m.yaml", seed=1, train_args={"project": str(tmp_path), "name": "x"})
    slow = tmp_path / "slow-python"
    slow.write_text(SLOW_RUN)
    slow.chmod(0o755)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(asdict(job)))
    bench = subprocess.Popen([sys.executable, "-c", BENCH, str(spec), str(slow)])
    run = None
    try:
        run = held_by(job, bench.pid)  # the slow run the bench started
        (job.folder / "job.json").unlink()
        with pytest.raises(KDConfigError, match=rf"'x' seed 1 is still training in process {run} .*kill {run}"):
            launch(job, python="false")
        assert not (job.folder / "job.json").exists()
        bench.kill()
        bench.wait()
        with pytest.raises(KDConfigError, match=rf"still training in process {run} "):  # the bench's orphan
            launch(job, python="false")
    finally:
        bench.kill()
        if run is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(run, signal.SIGKILL)
    for _ in range(600):  # until the killed run's process is gone (an orphan: reaped by init)
        try:
            os.kill(run, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    with pytest.raises(RuntimeError, match="bench run 'x' seed 1 failed"):
        launch(job, python="false")
