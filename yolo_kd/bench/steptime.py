"""Step-time microbenchmark: forward + backward seconds per training step of the plain student, Ultralytics'
built-in KD and each yolo-kd method, in one process, on one fixed batch, timed round-robin so that drift in the
machine's speed hits every candidate alike. Reported as ratios to the plain student, with the teacher forward's share.
"""

from __future__ import annotations

import copy
import statistics
import time
from contextlib import nullcontext

import torch
from ultralytics.utils import LOGGER

from .. import ultra
from ..errors import KDConfigError
from ..resolution import resample
from .machine import fingerprint, on_cuda
from .report import POOL_SUFFIX

POOL_KD_TIMED = ({}, {"unlabeled_kd": 0.25}, {"unlabeled_kd": False}, {"labeled_kd": False})  # the pool rows' keys:
#           the KD terms read all, a quarter or none of the pool images beside the labeled ones, or the pool only


def synthetic_batch(batch: int, imgsz: int, nc: int, device: torch.device, boxes_per_image: int = 4,
                    seed: int = 0) -> dict:
    """A training batch as Ultralytics' loss reads it: images in [0, 1], normalised xywh boxes, classes, image index."""
    g = torch.Generator().manual_seed(seed)
    n = batch * boxes_per_image
    wh = 0.05 + 0.3 * torch.rand(n, 2, generator=g)
    xy = wh / 2 + (1 - wh) * torch.rand(n, 2, generator=g)
    return {
        "img": torch.rand(batch, 3, imgsz, imgsz, generator=g).to(device),
        "cls": torch.randint(0, nc, (n, 1), generator=g).float().to(device),
        "bboxes": torch.cat([xy, wh], 1).to(device),
        "batch_idx": torch.arange(batch).repeat_interleave(boxes_per_image).float().to(device),
    }


def build_student(model: str, nc: int, imgsz: int, dis: float, device: torch.device):
    """The student as the trainer sets it up: a DetectionModel with the data's nc and the train args attached."""
    if model.endswith((".yaml", ".yml")):
        student = ultra.detection_model(model, nc=nc)
    else:
        weights = ultra.load_model(model)
        student = ultra.detection_model(weights.yaml, nc=nc)
        student.load(weights, verbose=False)
    student.args = ultra.train_args(imgsz=imgsz, dis=dis)
    return student.to(device).train()


class Candidate:
    """One timed configuration: a module whose `loss(batch)` is run forward and backward."""

    def __init__(self, label: str, module: torch.nn.Module, teacher_forward=None, teacher_imgsz=None,
                 pool_rows=None, labeled_kd=True):
        self.label, self.module, self.teacher_forward = label, module, teacher_forward
        self.teacher_imgsz = teacher_imgsz  # the batch comes from a loader at this size (`teacher_img`)
        self.pool_rows = pool_rows  # None: no pool; else the step also reads as many unlabeled images as labeled
        #           ones (`unlabeled_img`), the teacher this many of them
        self.labeled_kd = labeled_kd  # the teacher reads the labeled images too (False: the pool rows only)

    def step(self, batch: dict, amp: bool) -> None:
        self.module.zero_grad(set_to_none=True)
        if self.teacher_imgsz:
            batch = {**batch, "teacher_img": batch["sources"][self.teacher_imgsz]}
        if self.pool_rows is not None:
            batch = {**batch, "unlabeled_img": batch["pool_img"], "unlabeled_boxes": batch["pool_boxes"]}
        with torch.autocast("cuda") if amp else nullcontext():
            loss, _ = self.module.loss(batch)
        loss.sum().backward()


def candidates(opts: dict, device: torch.device, batch: int) -> tuple[list[Candidate], dict, int]:
    """Plain student, Ultralytics' DistillationModel and one Distiller per method (+ one with the teacher at
    `teacher_imgsz`, + the first method with a pool of `batch` images per step with each of `POOL_KD_TIMED`), all from
    the same initial student weights; the teachers (for their forward's share); nc."""
    from ..distiller import Distiller
    from ..recipe import Recipe
    from ..teachers import freeze

    teacher_ckpt = ultra.load_model(opts["teacher"])
    names = dict(teacher_ckpt.names)
    student0 = build_student(opts["model"], len(names), opts["imgsz"], opts["dis"], device)
    out = [Candidate("student", copy.deepcopy(student0))]
    builtin = ultra.builtin_distillation_model(opts["teacher"], copy.deepcopy(student0)).to(device).train()
    teacher_forwards = {"Ultralytics built-in": builtin.teacher_model}
    out.append(Candidate(f"Ultralytics KD (dis={opts['dis']:g})", builtin, "Ultralytics built-in"))
    ours = freeze(teacher_ckpt.to(device))
    teacher_forwards["yolo-kd"] = ours
    runs = [(m, None) for m in opts["methods"]]
    if opts.get("teacher_imgsz"):
        runs.append((opts["methods"][0], opts["teacher_imgsz"]))
    for method, t_size in runs:
        recipe = Recipe.from_kwargs(teacher=opts["teacher"], method=method, teacher_imgsz=t_size)
        distiller = Distiller(copy.deepcopy(student0), recipe, epochs=1, names=names).to(device).train()
        distiller.set_epoch(0)
        label = f"yolo-kd {method}" + (f" (teacher at {t_size})" if t_size else "")
        out.append(Candidate(label, distiller, f"yolo-kd@{t_size}" if t_size else "yolo-kd", t_size))
    method = opts["methods"][0]  # the same recipe with an unlabeled pool at ratio 1 (its images and boxes in the
    for keys in POOL_KD_TIMED:  # batch), the teacher reading all, some or none of the pool images, or the pool only
        recipe = Recipe.from_kwargs(teacher=opts["teacher"], method=method, unlabeled=["pool"], **keys)
        try:
            distiller = Distiller(copy.deepcopy(student0), recipe, epochs=1, names=names).to(device).train()
        except KDConfigError as e:
            if keys.get("labeled_kd") is not False:
                raise
            LOGGER.info(f"yolo-kd bench: step time of {method} with {keys} skipped: {e}")  # it reads ground truth
            continue
        distiller.set_epoch(0)
        rows = recipe.pool_kd_rows(batch)
        plural = "s" * (rows > 1)
        forward = ("yolo-kd" if not rows else f"yolo-kd + {rows} pool image{plural}" if recipe.labeled_kd
                   else f"yolo-kd on {rows} pool image{plural}")
        teacher_forwards[forward] = ours
        suffix = "".join(f", {k}={v}" for k, v in keys.items())
        out.append(Candidate(f"yolo-kd {method} {POOL_SUFFIX}{suffix}", distiller, forward, pool_rows=rows,
                             labeled_kd=recipe.labeled_kd))
    out.sort(key=lambda c: c.teacher_imgsz is not None)  # the teacher at its size last in each round: its large
    return out, teacher_forwards, len(names)  # buffers slowed the pool rows timed after it (1.78x against 1.51x)


def step_benchmark(opts: dict, device: str = "cpu", steps: int = 3, rounds: int = 5, batch: int = 8) -> dict:
    """Median ms per step of each candidate, its ratio to the plain student and its teacher forward's share, with
    the machine it ran on (`machine.fingerprint`).

    opts: model, teacher, methods (list), imgsz, dis, teacher_imgsz (optional).
    """
    dev = torch.device("cuda:0" if on_cuda(device) else "cpu")
    amp = dev.type == "cuda"
    cands, teachers, nc = candidates(opts, dev, batch)
    data = synthetic_batch(batch, opts["imgsz"], nc, dev)
    pool = synthetic_batch(batch, opts["imgsz"], nc, dev, seed=1)  # the pool's boxes, as `label+conf` carries them
    data["pool_img"], data["pool_boxes"] = pool["img"], {k: pool[k] for k in ("batch_idx", "cls", "bboxes")}
    t_size = opts.get("teacher_imgsz")
    t_inputs = {}
    if t_size:  # as the trainer's loader makes it: the batch at the teacher's size, the student's its downsample
        source = synthetic_batch(batch, t_size, nc, dev)["img"]
        data = {**data, "img": resample(source, tuple(data["img"].shape[-2:])), "sources": {t_size: source}}
        teachers[f"yolo-kd@{t_size}"] = teachers["yolo-kd"]
        t_inputs[f"yolo-kd@{t_size}"] = source
    t_inputs.update({"Ultralytics built-in": data["img"], "yolo-kd": data["img"],
                     **{c.teacher_forward: torch.cat(([data["img"]] if c.labeled_kd else [])
                                                     + [data["pool_img"][:c.pool_rows]])
                        for c in cands if c.pool_rows}})

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def teacher_call(key):
        def call():
            with torch.no_grad(), torch.autocast("cuda") if amp else nullcontext():
                x = t_inputs[key]
                teachers[key](x.contiguous(memory_format=torch.channels_last) if amp and key != "Ultralytics built-in"
                              else x)
        return call

    timed = [(c.label, lambda c=c: c.step(data, amp)) for c in cands]
    timed += [(f"teacher forward: {k}", teacher_call(k)) for k in teachers]
    times = {label: [] for label, _ in timed}
    LOGGER.info(f"yolo-kd bench: step time of {len(cands)} configurations ({', '.join(c.label for c in cands)}) and "
                f"{len(teachers)} teacher forward(s): batch {batch} at {opts['imgsz']} px on {dev}, {rounds} rounds "
                f"x {steps} steps after a warm-up round")
    began = time.perf_counter()
    for r in range(rounds + 1):  # round 0 warms up (criterion build, allocator, lazy teacher load)
        if r:
            done = time.perf_counter() - began
            LOGGER.info(f"yolo-kd bench: step time round {r}/{rounds} (elapsed {done:.0f} s, about "
                        f"{done / r * (rounds + 1 - r):.0f} s left)")
        for label, call in timed:
            sync()
            start = time.perf_counter()
            for _ in range(steps):
                call()
            sync()
            if r:
                times[label].append(1000 * (time.perf_counter() - start) / steps)
    ms = {k: statistics.median(v) for k, v in times.items()}
    base = ms["student"]
    rows = {}
    for c in cands:
        t_ms = ms[f"teacher forward: {c.teacher_forward}"] if c.teacher_forward else None
        rows[c.label] = {"ms": ms[c.label], "ratio": ms[c.label] / base,
                         "teacher_share": t_ms / ms[c.label] if t_ms else None}
    return {"device": str(dev), "amp": amp, "batch": batch, "imgsz": opts["imgsz"], "teacher_imgsz": t_size,
            "steps": steps, "rounds": rounds, "rows": rows,
            "teacher_forward_ms": {k: ms[f"teacher forward: {k}"] for k in teachers}, "machine": fingerprint(device)}
