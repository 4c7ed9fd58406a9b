"""One benchmark training run per subprocess: train (baseline, Ultralytics' built-in KD or yolo-kd), then score the
result with pycocotools. A fresh process per run keeps runs independent and makes peak memory a per-run figure.

`python -m yolo_kd.bench.runs job.json` runs the job described in job.json and writes its result.json next to it
(`... job.json N`: continues the job's training, cut off after N epochs, from its last.pt first).
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

from ..errors import KDConfigError
from .machine import fingerprint, on_cuda
from .provenance import code_version


@dataclass
class Job:
    """One run: `kind` names its row's family ('baseline', 'builtin' (Ultralytics distill_model=/dis=), 'yolo-kd',
    'teacher'; the label-scarce bench adds 'pseudo', 'pseudo-builtin', 'pseudo-kd', 'ceiling'); a run with `kd`
    (yolo_kd.distill's keywords) is distilled by yolo-kd, whatever its kind."""

    label: str
    kind: str
    model: str
    seed: int
    train_args: dict
    kd: dict = field(default_factory=dict)
    eval_imgsz: int = 640
    train: bool = True
    eval_data: str | None = None  # the data.yaml whose val split scores the run (default: the one it trains on)
    scored: str = "best"  # which of its checkpoints a trained run scores: best (= last without val) or last

    @property
    def folder(self) -> Path:
        return Path(self.train_args["project"]) / self.train_args["name"]

    @property
    def last(self) -> Path:
        """The last.pt its training writes (and a cut-off run resumes from)."""
        return self.folder / "weights" / "last.pt"

    @property
    def result_file(self) -> Path:
        """The result.json a finished run writes (the job and its result), which a later bench reuses."""
        return self.folder / "result.json"

    def named_by(self, saved: dict) -> bool:
        """Whether a saved job (job.json, or result.json's "job") is this one (`with_defaults`)."""
        return with_defaults(saved) == asdict(self)

    @property
    def checkpoint(self) -> Path:
        """The weights the job scores: its best.pt (or last.pt) when it trains, else the model as given."""
        return self.folder / "weights" / f"{self.scored}.pt" if self.train else Path(self.model)


PROGRESS = "progress.json"  # a training run's code version and epoch times so far: a cut-off run resumes with them
LOCK = ".lock"  # a run folder's lock while a bench trains in it; the file holds the id of the process training


class EpochTimer:
    """Callbacks recording each epoch's training-loop seconds (from epoch start to epoch end, no validation); each
    epoch's times are also written to `progress` with the code version and the peak memory so far (of this process
    and of the cut-off one it continues, `peak_mb`), for a resumed run to continue from."""

    def __init__(self, progress: Path, code: str, seconds: list[float], device: str, peak_mb: float = 0.0):
        self.started, self.progress, self.code, self.seconds = 0.0, progress, code, list(seconds)
        self.device, self.earlier_peak_mb = device, peak_mb

    def start(self, trainer) -> None:
        self.started = time.perf_counter()

    def stop(self, trainer) -> None:
        self.seconds.append(time.perf_counter() - self.started)
        self.progress.write_text(json.dumps({"code": self.code, "epoch_seconds": self.seconds,
                                             "peak_mem_mb": self.peak_mb()}))

    def peak_mb(self) -> float:
        return max(self.earlier_peak_mb, peak_memory_mb(self.device))


def peak_memory_mb(device: str) -> float:
    """Peak CUDA memory allocated by this process, or its peak resident set size on CPU (MB)."""
    import torch

    if on_cuda(device):
        return torch.cuda.max_memory_allocated() / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_job(job: Job, resumed_after: int | None = None) -> dict:
    """Train (unless `job.train` is False: evaluate `job.model` as is) and evaluate with pycocotools; `resumed_after`:
    the epochs of a cut-off run of the job (`cut_off_epochs`) to continue from (yolo-kd's exact resume), keeping their
    times and peak memory (the wall time of a resumed run is not known: None)."""
    from ultralytics import YOLO

    from ..api import distill
    from ..hooks import reseed
    from ..evaluation import evaluate_checkpoint, load_eval_set

    code = code_version()  # the code as this process imported it, before training
    data, device = job.train_args["data"], job.train_args.get("device", "cpu")
    earlier = json.loads((job.folder / PROGRESS).read_text()) if resumed_after else {}
    timer = EpochTimer(job.folder / PROGRESS, code, earlier.get("epoch_seconds", [])[:resumed_after], device,
                       earlier.get("peak_mem_mb", 0.0))
    wall = None
    if job.train:
        model = YOLO(str(job.last) if resumed_after else job.model)
        model.add_callback("on_train_epoch_start", timer.start)
        model.add_callback("on_train_epoch_end", timer.stop)
        if job.kd:
            distill(model, **job.kd)
        else:  # the per-epoch random state yolo-kd runs re-derive, so a pair shares its augmentation stream
            model.add_callback("on_train_epoch_start", reseed)
        started = time.perf_counter()
        model.train(**({"resume": True} if resumed_after else job.train_args))  # resume: last.pt's own train args
        wall = None if resumed_after else time.perf_counter() - started
    checkpoint = job.checkpoint
    evaluation = evaluate_checkpoint(checkpoint, load_eval_set(job.eval_data or data), job.folder / "eval",
                                     imgsz=job.eval_imgsz, device=device)
    return {
        "label": job.label, "kind": job.kind, "seed": job.seed, "checkpoint": str(checkpoint),
        "mAP50-95": evaluation["coco"]["mAP50-95"], "mAP50": evaluation["coco"]["mAP50"],
        "epoch_seconds": timer.seconds,
        "train_wall_seconds": wall,  # model.train from call to return: the epochs and all between and around them
        "resumed_after_epoch": resumed_after,  # epochs trained before a cut-off (timed then, from progress.json)
        "sec_per_epoch": statistics.median(timer.seconds) if timer.seconds else None,
        "peak_mem_mb": timer.peak_mb() if job.train else None,  # a resumed run's: the cut-off process's too
        "machine": fingerprint(device),
        "code": code,
    }


def with_defaults(saved: dict) -> dict:
    """A saved job (or teacher record) with the Job fields added since it was saved at their defaults: the code that
    saved it ran them that way, so it still names the same run."""
    defaults = {f.name: f.default for f in fields(Job) if f.default is not MISSING}
    return {**defaults, **saved}


def cut_off_epochs(job: Job) -> int | None:
    """How many epochs a cut-off yolo-kd run of this very job trained, or None (the run starts over). Cut off: the
    folder's job.json names `job`, its progress.json the code running now, and its last.pt still holds the engine's
    continuation (a finished run drops it) short of the last epoch, so the run resumes exactly where it stopped. Rows
    trained by Ultralytics alone start over (its resume is not exact)."""
    import torch

    from ..distiller import KD_STATE_KEY

    job_file, progress, last = job.folder / "job.json", job.folder / PROGRESS, job.last
    if not (job.train and job.kd and job_file.is_file() and progress.is_file() and last.is_file()):
        return None
    if (not job.named_by(json.loads(job_file.read_text()))
            or json.loads(progress.read_text()).get("code") != code_version()):
        return None
    try:
        ckpt = torch.load(last, map_location="cpu", weights_only=False)
    except Exception:  # a checkpoint cut off while it was written (any unpickling error): start over
        return None
    trained = ckpt.get("epoch", -1) + 1
    resumable = "continue" in (ckpt.get(KD_STATE_KEY) or {}) and 0 < trained < job.train_args["epochs"]
    return trained if resumable else None


@contextmanager
def run_lock(job: Job):
    """Hold `job`'s run folder for one run, or refuse in one line naming the process that holds it: an exclusive
    flock on the folder's `.lock`, passed on to the run's process, so it lasts while the bench or its run lives (a
    bench stopped from outside leaves its run training; two benches started at once cannot both pass). Yields the
    lock's descriptor, or None where there is no flock (Windows: no lock)."""
    try:
        import fcntl
    except ImportError:
        yield None
        return
    job.folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(job.folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise KDConfigError(f"bench run '{job.label}' seed {job.seed} is still training in process {pid} "
                                f"({job.folder}): wait for it to finish or stop it (kill {pid}), then run the bench "
                                "again") from None
        name_in_lock(fd, os.getpid())  # the bench itself until its run's process starts
        yield fd
    finally:
        os.close(fd)


def name_in_lock(fd: int | None, pid: int) -> None:
    """Write the id of the process training into the held lock file (what a refused bench names)."""
    if fd is not None:
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(pid).encode(), 0)


def launch(job: Job, python: str = sys.executable) -> dict:
    """Run `job` in a fresh process (log in its folder); reuse its result.json when a previous bench wrote one, and
    resume its training when a previous bench was cut off in it (`cut_off_epochs`)."""
    done = finished_result(job)
    if done:
        return done
    with run_lock(job) as lock:
        return finished_result(job) or run_locked(job, python, lock)  # another bench may have finished it meanwhile


def finished_result(job: Job) -> dict | None:
    """The result a previous bench wrote for this very job (marked `reused`), or None."""
    if job.result_file.is_file():
        saved = json.loads(job.result_file.read_text())
        if job.named_by(saved.get("job") or {}):
            return {**saved["result"], "reused": True}
    return None


def run_locked(job: Job, python: str, lock: int | None) -> dict:
    """`launch`'s run, the folder's lock held (`lock`: its descriptor, which the run's process inherits)."""
    folder = job.folder
    folder.mkdir(parents=True, exist_ok=True)
    trained = cut_off_epochs(job)
    if trained is None:  # another job's or a finished run's: not to be resumed by this one
        for stale in (job.last, folder / PROGRESS):
            stale.unlink(missing_ok=True)
    else:
        from ultralytics.utils import LOGGER

        LOGGER.info(f"yolo-kd bench: '{job.label}' seed {job.seed} was cut off after epoch {trained}: resuming it")
    job_file = folder / "job.json"
    job_file.write_text(json.dumps(asdict(job), indent=2))
    log = folder / "bench.log"
    command = [python, "-m", "yolo_kd.bench.runs", str(job_file), *([] if trained is None else [str(trained)])]
    with open(log, "w" if trained is None else "a") as out:  # a resumed run's log continues the cut-off one's
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                   pass_fds=() if lock is None else (lock,))
        name_in_lock(lock, process.pid)
        code = process.wait()
    if code != 0 or not job.result_file.is_file():
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise RuntimeError(f"bench run '{job.label}' seed {job.seed} failed (exit {code}); log {log}:\n{tail}")
    return json.loads(job.result_file.read_text())["result"]


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", text).strip("_")


class Progress:
    """Elapsed time and an estimate of what remains, from the runs trained so far (runs reused from an earlier
    bench take no time and do not count towards the estimate)."""

    def __init__(self, total: int):
        self.total, self.finished, self.trained, self.began = total, 0, 0, time.perf_counter()

    def done(self, reused: bool) -> None:
        self.finished += 1
        self.trained += 0 if reused else 1

    def status(self) -> str:
        elapsed = time.perf_counter() - self.began
        if not self.trained:
            return f"elapsed {elapsed / 60:.1f} min"
        left = elapsed / self.trained * (self.total - self.finished)
        return f"elapsed {elapsed / 60:.1f} min, about {left / 60:.0f} min left"


def run_jobs(jobs: list, detail=lambda result: "") -> list[dict]:
    """Launch the jobs in turn (a finished run is reused), logging 'run i of n', each score (+ `detail(result)`) and
    the time left."""
    from ultralytics.utils import LOGGER

    progress, results = Progress(len(jobs)), []
    for i, job in enumerate(jobs, 1):
        prefix = f"yolo-kd bench: run {i} of {len(jobs)}, {job.label}, seed {job.seed}"
        LOGGER.info(f"{prefix} (log: {job.folder / 'bench.log'}; {progress.status()})")
        result = launch(job)
        progress.done(result.get("reused", False))
        LOGGER.info(f"{prefix}: mAP50-95 {result['mAP50-95']:.4f}{detail(result)}")
        results.append(result)
    return results


def main(job_file: str, resumed_after: int | None = None) -> None:
    """Subprocess entry: set Ultralytics up air-gapped, run the job (`resumed_after`: continue its cut-off training),
    write result.json with the job in it, so a changed job is never mistaken for a finished one."""
    from ..offline import setup_offline

    setup_offline()
    spec = json.loads(Path(job_file).read_text())
    job = Job(**spec)
    result = run_job(job, resumed_after)
    job.result_file.write_text(json.dumps({"job": spec, "result": result}, indent=2))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else None)
