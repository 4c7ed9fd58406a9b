"""`yolo-kd bench`: the undistilled student, Ultralytics' built-in KD and each yolo-kd method, trained with the same
data, epochs, image size, seeds and augmentation, scored with pycocotools; plus a one-process step-time benchmark.

Writes <project>/<name>/bench.md, bench.json and bench.png. Finished runs are reused when the bench is run again with
the same settings, so an interrupted bench resumes where it stopped.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..errors import KDConfigError

DEFAULTS = {
    "model": "yolov8n.yaml", "epochs": 10, "imgsz": 640, "batch": 16, "seeds": "1,2,3",
    "methods": "fgd,cskd,pred,cwd,mgd", "builtin": True, "dis": 6.0, "recipe": None, "teacher_imgsz": None,
    "weights": None, "teacher_epochs": None, "project": "runs/kd_bench", "name": "bench", "device": "cpu",
    "workers": 2, "train": True, "step": True, "step_batch": 8, "step_rounds": 5, "step_steps": 3,
    "step_teacher_imgsz": None,
}
REQUIRED = ("data", "teacher")


def parse_list(value, cast=str) -> list:
    """'1,2,3' / 3 / [1, 2] -> a list."""
    if isinstance(value, (list, tuple)):
        return [cast(v) for v in value]
    return [cast(v.strip()) for v in str(value).split(",") if v.strip()]


def bench_options(overrides: dict) -> tuple[dict, dict]:
    """Split the command's keys into bench options (defaults filled in, checked) and Ultralytics train arguments."""
    from ultralytics.utils import DEFAULT_CFG_KEYS

    from ..methods import check_method
    from ..recipe import parse_methods

    opts = {**DEFAULTS, **{k: v for k, v in overrides.items() if k in DEFAULTS or k in REQUIRED}}
    extra = {k: v for k, v in overrides.items() if k not in opts}
    unknown = sorted(k for k in extra if k not in DEFAULT_CFG_KEYS or k in {"distill_model", "dis"})
    if unknown:
        raise KDConfigError(f"unknown bench option(s) {unknown}: use {sorted([*REQUIRED, *DEFAULTS])} or "
                            "Ultralytics train arguments")
    missing = [k for k in REQUIRED if not opts.get(k)]
    if missing:
        raise KDConfigError(f"bench needs {' and '.join(f'{k}=' for k in missing)}: e.g. data=defect "
                            "teacher=teacher.pt (or teacher=yolov8s.yaml to train one first)")
    opts["seeds"] = parse_list(opts["seeds"], int)
    opts["methods"] = parse_list(opts["methods"])
    if opts["weights"] is not None and not (isinstance(opts["weights"], (int, float)) and opts["weights"] >= 0):
        raise KDConfigError(f"bench weights={opts['weights']} must be one number >= 0 (it scales every method)")
    for method in opts["methods"]:
        for name in parse_methods(method):
            check_method(name, {})
    if opts["step"] and not opts["train"] and str(opts["teacher"]).endswith((".yaml", ".yml")):
        raise KDConfigError("step=True with train=False needs a trained teacher: pass teacher=<.pt>")
    if opts["recipe"] and not Path(opts["recipe"]).is_file():
        raise KDConfigError(f"recipe {opts['recipe']} not found: give the path of a recipe YAML")
    return opts, extra


def resolve_data(data: str, root: Path) -> str:
    """data=defect|agriculture means the demo's data set (made or converted offline); anything else is a data.yaml."""
    from ..demo import DOMAINS, make_data

    if data in DOMAINS:
        return str(make_data(data, DOMAINS[data].profiles["default"], root / data, seed=0))
    if not Path(data).is_file():
        raise KDConfigError(f"data={data} not found: give a data.yaml, or data=defect / data=agriculture for the "
                            "demo data")
    return data


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", text).strip("_")


def plan(opts: dict, train_args: dict, teacher: str) -> list:
    """The training jobs, seed by seed: baseline, built-in KD, each method, the recipe."""
    from .runs import Job

    jobs = []
    for seed in opts["seeds"]:
        def job(label, kind, kd=None, extra=None):
            args = {**train_args, **(extra or {}), "seed": seed, "name": f"{slug(label)}_s{seed}"}
            return Job(label=label, kind=kind, model=opts["model"], seed=seed, train_args=args, kd=kd or {},
                       eval_imgsz=opts["imgsz"])

        jobs.append(job("baseline", "baseline"))
        if opts["builtin"]:
            jobs.append(job(f"Ultralytics KD (dis={opts['dis']:g})", "builtin",
                            extra={"distill_model": teacher, "dis": opts["dis"]}))
        weight = opts["weights"]
        for method in opts["methods"]:
            kd = {"teacher": teacher, "method": method, "teacher_imgsz": opts["teacher_imgsz"]}
            if weight is not None:
                kd["weights"] = weight
            jobs.append(job(f"yolo-kd {method}" + (f" x{weight:g}" if weight is not None else ""), "yolo-kd", kd=kd))
        if opts["recipe"]:
            jobs.append(job(f"yolo-kd recipe {Path(opts['recipe']).stem}", "yolo-kd", kd={"cfg": opts["recipe"]}))
    return jobs


def bench_command(overrides: dict) -> dict:
    """Run the benchmark; returns the summary that bench.json holds."""
    from ultralytics.utils import LOGGER

    from ..teachers import check_teacher_file
    from ..recipe import TeacherSpec
    from . import report
    from .runs import Job, launch
    from .steptime import step_benchmark

    opts, ultra = bench_options(overrides)
    out = Path(opts["project"]) / opts["name"]
    teacher = str(opts["teacher"])
    train_teacher = teacher.endswith((".yaml", ".yml"))
    if not train_teacher:
        check_teacher_file("teacher", TeacherSpec(model=teacher))
    data = resolve_data(str(opts["data"]), Path(opts["project"]) / "data")
    train_args = {"data": data, "epochs": opts["epochs"], "imgsz": opts["imgsz"], "batch": opts["batch"],
                  "nbs": opts["batch"], "device": opts["device"], "workers": opts["workers"], "deterministic": True,
                  "plots": False, "val": False, "exist_ok": True, "project": str(out.resolve()), **ultra}
    teacher_job = Job(label="teacher", kind="teacher", model=teacher, seed=0, eval_imgsz=opts["imgsz"],
                      train=train_teacher, train_args={**train_args, "seed": 0, "name": "teacher",
                                                       "epochs": opts["teacher_epochs"] or 3 * opts["epochs"]})
    results, step = [], None
    if opts["train"]:
        LOGGER.info(f"yolo-kd bench: {'training and ' if train_teacher else ''}scoring the teacher")
        teacher_result = launch(teacher_job)
        teacher = teacher_result["checkpoint"]
        jobs = plan(opts, train_args, teacher)
        for i, job in enumerate(jobs, 1):
            prefix = f"yolo-kd bench [{i}/{len(jobs)}] {job.label}, seed {job.seed}"
            LOGGER.info(f"{prefix} (log: {job.folder / 'bench.log'})")
            r = launch(job)
            LOGGER.info(f"{prefix}: mAP50-95 {r['mAP50-95']:.4f}, {r['sec_per_epoch']:.1f} s/epoch")
            results.append(r)
    if opts["step"]:
        LOGGER.info("yolo-kd bench: step-time microbenchmark")
        step = step_benchmark({"model": opts["model"], "teacher": teacher, "methods": opts["methods"],
                               "imgsz": opts["imgsz"], "dis": opts["dis"],
                               "teacher_imgsz": opts["step_teacher_imgsz"] or 2 * opts["imgsz"]},
                              device=opts["device"], steps=opts["step_steps"], rounds=opts["step_rounds"],
                              batch=opts["step_batch"])
    settings = {"data": data, "model": opts["model"], "teacher": teacher, "epochs": opts["epochs"],
                "imgsz": opts["imgsz"], "batch": opts["batch"], "seeds": opts["seeds"], "device": opts["device"],
                **({"teacher_imgsz": opts["teacher_imgsz"]} if opts["teacher_imgsz"] else {}), **ultra}
    summary = {"settings": settings, "step": step, "runs": results}
    out.mkdir(parents=True, exist_ok=True)
    rows = report.summarize(results, teacher_result) if results else {}
    if rows:
        summary.update(teacher=teacher_result, rows=rows, plot=str(report.plot(rows, teacher_result,
                                                                                out / "bench.png")))
    text = report.markdown(rows, summary.get("teacher"), step, settings)
    (out / "bench.md").write_text(text)
    (out / "bench.json").write_text(json.dumps(summary, indent=2, default=str))
    print(text)
    print(f"saved: {out / 'bench.md'}, {out / 'bench.json'}" + (f", {out / 'bench.png'}" if results else ""))
    return summary
