"""`yolo-kd bench`: the undistilled student, Ultralytics' built-in KD and each yolo-kd method, trained with the same
data, epochs, image size, seeds and augmentation, scored with pycocotools; plus a one-process step-time benchmark.

Writes <project>/<name>/bench.md, bench.json and bench.png. Finished runs are reused when the bench is run again with
the same settings, and a yolo-kd run cut off mid-training resumes from its last.pt (exactly, by the engine's resume;
the other rows train again), so an interrupted bench resumes where it stopped.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import KDConfigError
from ..options import (as_bool, as_count, as_float, as_int, as_list, as_nonnegative, as_str, optional,
                       read_options)
from ..recipe import DEFAULT_METHOD
from .machine import machine_note
from .provenance import code_note
from .runs import run_jobs, slug

BENCH_SPEC = {
    "data": (as_str, None, "a data.yaml, or defect / agriculture for the demo data (required)"),
    "teacher": (as_str, None, "the teacher .pt, or a model yaml to train one first (required)"),
    "model": (as_str, "yolov8n.yaml", "the student"),
    "epochs": (as_int, 10, "student epochs"),
    "imgsz": (as_int, 640, "student image size"),
    "batch": (as_int, 16, "batch size (nbs is set to it)"),
    "seeds": (as_list(int), [1, 2, 3], "one baseline and one run per method for each seed"),
    "methods": (as_list(), [DEFAULT_METHOD, "pred"], "yolo-kd methods to run, comma-separated"),
    "builtin": (as_bool, True, "also run Ultralytics' built-in KD (distill_model=, dis=)"),
    "dis": (as_nonnegative, 6.0, "the built-in's weight"),
    "recipe": (as_str, None, "also run this recipe YAML"),
    "teacher_imgsz": (optional(as_int), None, "run the yolo-kd methods with the teacher at this size"),
    "same_size_too": (as_bool, False, "with teacher_imgsz, also run each method with the teacher at the student's size"),
    "weights": (optional(as_nonnegative), None, "one weight for every method (default: each method's own)"),
    "teacher_epochs": (optional(as_int), None, "epochs when the teacher is trained first (default 3 x epochs)"),
    "labeled_fraction": (optional(as_float), None, "label-scarce bench: keep this share of the train labels, the "
                         "rest is the unlabeled pool (see yolo_kd/bench/scarce.py)"),
    "split_seed": (as_count, 0, "label-scarce bench: which images keep their labels"),
    "pseudo_conf": (as_list(float), [0.25], "label-scarce bench: the teacher's confidence for pseudo-labels, one "
                    "pseudo-label row each (0.25: Ultralytics' predict default)"),
    "pseudo_builtin": (as_bool, False, "label-scarce bench: also the built-in on labeled + pseudo-labeled images"),
    "pseudo_kd": (as_bool, False, "label-scarce bench: also yolo-kd's default recipe on labeled + pseudo-labeled "
                  "images (the pseudo-label route plus the dense terms)"),
    "guard_val": (as_count, 0, "label-scarce bench: pool rows with teacher_guard validate every epoch on this many "
                  "pool images with their labels (they stay in the pool; the rows are scored on the data set's val "
                  "split, last.pt)"),
    "close_mosaic_share": (as_float, 0.1, "label-scarce bench: no-mosaic share of each run's epochs"),
    "rows": (as_list(), None, "label-scarce bench: only these rows (baseline, builtin, labeled, pool, variants, "
             "pseudo, ceiling; default all), e.g. rows=baseline,ceiling to choose a budget"),
    "unlabeled_bn": (as_list(), ["all"], "label-scarce bench: one pool row per BatchNorm choice (all, labeled)"),
    "pool_variants": (as_list(), None, "label-scarce bench: one more pool row per entry, recipe keys as "
                      "key:value/key:value (e.g. unlabeled_boxes:0.5,unlabeled_ratio:2)"),
    "project": (as_str, "runs/kd_bench", "output folder"),
    "name": (as_str, "bench", "run name"),
    "device": (as_str, "cpu", "cpu or a CUDA device"),
    "workers": (as_count, 2, "data loader workers"),
    "train": (as_bool, True, "train and score the runs"),
    "step": (as_bool, True, "run the step-time microbenchmark"),
    "step_batch": (as_int, 8, "step bench batch size"),
    "step_rounds": (as_int, 5, "step bench rounds"),
    "step_steps": (as_int, 3, "step bench steps per round"),
    "step_teacher_imgsz": (optional(as_int), None, "step bench: the teacher at this size too (default 2 x imgsz)"),
}


def bench_options(overrides: dict) -> tuple[dict, dict]:
    """Split the command's keys into bench options (defaults filled in, checked) and Ultralytics train arguments."""
    from ..methods import check_method
    from ..recipe import parse_methods
    from ..ultra import train_arg_names

    opts, extra = read_options("bench", overrides, BENCH_SPEC, passthrough=train_arg_names() - {"distill_model"})
    missing = [k for k in ("data", "teacher") if not opts.get(k)]
    if missing:
        raise KDConfigError(f"bench needs {' and '.join(f'{k}=' for k in missing)}: e.g. data=defect "
                            "teacher=teacher.pt (or teacher=yolov8s.yaml to train one first)")
    for method in opts["methods"]:
        for name in parse_methods(method):
            check_method(name, {})
    from .scarce import ROWS
    from ..recipe import UNLABELED_BN

    for key, allowed in (("rows", ROWS), ("unlabeled_bn", UNLABELED_BN)):
        bad = sorted(set(opts[key] or ()) - set(allowed))
        if bad:
            raise KDConfigError(f"{key}={','.join(bad)} is not one of {', '.join(allowed)}")
    check_pool_variants(opts["pool_variants"] or [], opts["guard_val"])
    if opts["step"] and not opts["train"] and str(opts["teacher"]).endswith((".yaml", ".yml")):
        raise KDConfigError("step=True with train=False needs a trained teacher: pass teacher=<.pt>")
    if opts["recipe"] and not Path(opts["recipe"]).is_file():
        raise KDConfigError(f"recipe {opts['recipe']} not found: give the path of a recipe YAML")
    return opts, extra


def check_pool_variants(variants: list[str], guard_val: int = 0) -> None:
    """Each `pool_variants` entry must build a recipe (its keys yolo-kd options, its values valid), and one with
    `teacher_guard` needs `guard_val` images to validate on; in one line."""
    from ..api import KD_KEYS
    from ..recipe import Recipe
    from .scarce import parse_variant

    for text in variants:
        keys = parse_variant(text)
        bad = sorted(set(keys) - (set(KD_KEYS) - {"teacher", "cfg", "unlabeled"}))
        if bad:
            raise KDConfigError(f"pool_variants={text}: {', '.join(bad)} is not a yolo-kd option a pool row can vary")
        try:
            Recipe.from_kwargs(teacher="teacher.pt", unlabeled=["pool"], **keys)
        except KDConfigError as e:
            raise KDConfigError(f"pool_variants={text}: {e}") from None
        if keys.get("teacher_guard") and not guard_val:
            raise KDConfigError(f"pool_variants={text}: a row with teacher_guard validates every epoch: give "
                                "guard_val=N (N pool images with their labels as its validation set; the rows are "
                                "still scored on the data set's val split)")


def resolve_data(data: str, root: Path) -> str:
    """data=defect|agriculture means the demo's data set (made or converted offline); anything else is a data.yaml."""
    from ..data.domains import DOMAIN_NAMES, make_domain_data

    if data in DOMAIN_NAMES:
        return str(make_domain_data(data, root / data))
    if not Path(data).is_file():
        raise KDConfigError(f"data={data} not found: give a data.yaml, or data=defect / data=agriculture for the "
                            "demo data")
    return data


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
        sizes = [opts["teacher_imgsz"]] + ([None] if opts["teacher_imgsz"] and opts["same_size_too"] else [])
        for method in opts["methods"]:
            for size in sizes:
                kd = {"teacher": teacher, "method": method, "teacher_imgsz": size}
                if weight is not None:
                    kd["weights"] = weight
                label = f"yolo-kd {method}" + (f" x{weight:g}" if weight is not None else "")
                if opts["teacher_imgsz"]:
                    label += f" (teacher at {size or opts['imgsz']})"
                jobs.append(job(label, "yolo-kd", kd=kd))
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
    if opts["labeled_fraction"]:
        from .scarce import scarce_bench

        return scarce_bench(opts, train_args, data, out)
    results, step = [], None
    if opts["train"]:
        LOGGER.info(f"yolo-kd bench: {'training and ' if train_teacher else ''}scoring the teacher")
        teacher_result = launch(teacher_job)
        teacher = teacher_result["checkpoint"]
        results = run_jobs(plan(opts, train_args, teacher), lambda r: f", {r['sec_per_epoch']:.1f} s/epoch")
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
    text = report.markdown(rows, summary.get("teacher"), step, settings) + machine_note(
        results, step["machine"] if step else None) + code_note(results)
    (out / "bench.md").write_text(text)
    (out / "bench.json").write_text(json.dumps(summary, indent=2, default=str))
    print(text)
    print(f"saved: {out / 'bench.md'}, {out / 'bench.json'}" + (f", {out / 'bench.png'}" if results else ""))
    return summary
