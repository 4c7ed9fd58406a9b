"""The per-family bench (`python tools/bench_families.py data=... imgsz=...`): the default recipe and its box- and
quality-aware variants on each head family, against the undistilled student and Ultralytics' built-in KD.

Pairs: YOLO11 (yolo11s -> yolo11n), YOLO26 (yolo26s -> yolo26n) and the mixed pair (the same yolo11s teacher ->
yolo26n, a DFL head teaching a reg_max = 1 head). Teachers are trained first on the bench data; the two yolo26n pairs
share one baseline per seed. Jobs run seed by seed, so a bench stopped early holds whole seeds. Each pair is reported
as `yolo-kd bench` reports one teacher/student pair (`report.summarize`: gain over the same seed's baseline, and its
difference from the built-in of the same seed), for mAP50-95 and mAP50 alike.

Rows (`VARIANTS`): `sl2+pred` without box KD (`box_weight=0`), `+box` (`pred box_weight=2.5`: GIoU on decoded boxes,
PP-YOLOE+'s iou:class weight 2.5:1), `+box+quality` (and BCKD's `quality_beta=1`) and `+box o2o` (class and box KD on
the one-to-one branch only, `branches=one2one`). Each pair names the row that is its family's default recipe
(`Pair.default`); `variants=default` runs that row only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .runs import Job, launch, run_jobs, slug

#: label -> the `pred` options of the row (the rest of the recipe is the default `sl2+pred`)
VARIANTS = {
    "sl2+pred": {"box_weight": 0.0},
    "sl2+pred +box": {"box_weight": 2.5},
    "sl2+pred +box+quality": {"box_weight": 2.5, "quality_beta": 1.0},
    "sl2+pred +box o2o": {"box_weight": 2.5, "branches": "one2one"},
}
#: `variants=` keyword for each pair's own default row
DEFAULT = "default"


@dataclass(frozen=True)
class Pair:
    name: str
    teacher: str  # a model yaml trained first, by that name
    student: str
    variants: tuple[str, ...]
    default: str  # the row that is what `sl2+pred` does on this pair with the library's defaults


PAIRS = (
    Pair("YOLO11 (11s -> 11n)", "yolo11s.yaml", "yolo11n.yaml",
         ("sl2+pred", "sl2+pred +box", "sl2+pred +box+quality"), "sl2+pred"),
    Pair("YOLO26 (26s -> 26n)", "yolo26s.yaml", "yolo26n.yaml",
         ("sl2+pred", "sl2+pred +box", "sl2+pred +box o2o"), "sl2+pred +box"),
    Pair("mixed (11s -> 26n)", "yolo11s.yaml", "yolo26n.yaml",  # no `+box o2o`: the teacher has no one2one branch
         ("sl2+pred", "sl2+pred +box"), "sl2+pred +box"),
)


def picked(pair: Pair, variants: list[str] | None) -> list[str]:
    """The pair's rows that `variants` asks for (None: all; `default`: the pair's default row)."""
    if variants is None:
        return list(pair.variants)
    return [v for v in pair.variants if v in variants or (DEFAULT in variants and v == pair.default)]


def recipe(teacher: str, pred_options: dict) -> dict:
    """The default recipe (`sl2+pred`, each at its default weight) with `pred_options`, as a cfg dict."""
    return {"teachers": {"teacher": {"model": teacher}},
            "stages": [{"fraction": [0.0, 1.0], "teachers": ["teacher"],
                        "methods": {"sl2": {"weight": None}, "pred": {"weight": None, **pred_options}}}]}


def teacher_jobs(train_args: dict, teacher_epochs: int, imgsz: int) -> dict[str, Job]:
    """One training job per distinct teacher yaml."""
    return {t: Job(label=f"teacher {t}", kind="teacher", model=t, seed=0, eval_imgsz=imgsz,
                   train_args={**train_args, "seed": 0, "epochs": teacher_epochs, "name": f"teacher_{Path(t).stem}"})
            for t in dict.fromkeys(p.teacher for p in PAIRS)}


def plan(train_args: dict, seeds: list[int], teachers: dict[str, str], dis: float, imgsz: int,
         variants: list[str] | None = None) -> list[Job]:
    """Seed-major jobs: per seed, one baseline per student, then each pair's built-in and variant rows (those of
    `variants` only, when given; see `picked`). `teachers` maps each teacher yaml to its trained checkpoint."""
    jobs = []
    for seed in seeds:
        def job(label, kind, model, kd=None, extra=None):
            args = {**train_args, **(extra or {}), "seed": seed, "name": f"{slug(label)}_s{seed}"}
            return Job(label=label, kind=kind, model=model, seed=seed, train_args=args, kd=kd or {},
                       eval_imgsz=imgsz)

        for student in dict.fromkeys(p.student for p in PAIRS):
            jobs.append(job(f"baseline {Path(student).stem}", "baseline", student))
        for pair in PAIRS:
            ckpt = teachers[pair.teacher]
            jobs.append(job(f"{pair.name} Ultralytics KD (dis={dis:g})", "builtin", pair.student,
                            extra={"distill_model": ckpt, "dis": dis}))
            for variant in picked(pair, variants):
                jobs.append(job(f"{pair.name} yolo-kd {variant}", "yolo-kd", pair.student,
                                kd={"cfg": recipe(ckpt, VARIANTS[variant])}))
    return jobs


def pair_results(results: list[dict], jobs: list[Job], pair: Pair) -> list[dict]:
    """The runs one pair is judged on: its student's baselines and its own rows, labels without the pair name."""
    picked = []
    for result, job in zip(results, jobs):
        if job.kind == "baseline" and job.model == pair.student:
            picked.append({**result, "label": "baseline"})
        elif job.label.startswith(pair.name + " "):
            picked.append({**result, "label": job.label[len(pair.name) + 1:]})
    return picked


def with_map50(results: list[dict]) -> list[dict]:
    """The same runs scored by mAP50 (so `report.summarize` gives mAP50 gains)."""
    return [{**r, "mAP50-95": r["mAP50"]} for r in results]


def family_bench(opts: dict, train_args: dict, out: Path) -> dict:
    """Train the teachers, run every pair seed by seed, write families.md / families.json under `out`."""
    from ultralytics.utils import LOGGER

    from . import report

    teachers = {}
    for yaml_name, job in teacher_jobs(train_args, opts["teacher_epochs"], opts["imgsz"]).items():
        LOGGER.info(f"yolo-kd family bench: training and scoring {job.label}")
        teachers[yaml_name] = launch(job)
    jobs = plan(train_args, opts["seeds"], {k: v["checkpoint"] for k, v in teachers.items()}, opts["dis"],
                opts["imgsz"], opts["variants"])
    results = run_jobs(jobs)
    summary = {"settings": {**opts, "data": train_args["data"]}, "teachers": teachers, "runs": results, "pairs": {}}
    lines = [f"# yolo-kd family bench: {train_args['data']}", "",
             ", ".join(f"{k}={v}" for k, v in opts.items())]
    for pair in PAIRS:
        runs = pair_results(results, jobs, pair)
        teacher = teachers[pair.teacher]
        rows = report.summarize(runs, teacher)
        rows50 = report.summarize(with_map50(runs), {**teacher, "mAP50-95": teacher["mAP50"]})
        summary["pairs"][pair.name] = {"rows": rows, "rows_map50": rows50}
        lines += ["", f"## {pair.name}: teacher mAP50-95 {teacher['mAP50-95']:.4f}, mAP50 {teacher['mAP50']:.4f}"]
        lines += ["", f"The family's default recipe is the `yolo-kd {pair.default}` row."]
        lines += report.markdown(rows, teacher, None, {"data": train_args["data"]}).splitlines()[3:]
        lines += ["", "Paired gains in mAP50 points, mean with 95% interval:"] + report.paired_table(rows50)[2:]
        report.plot(rows, teacher, out / f"families_{slug(pair.name)}.png")
    (out / "families.md").write_text("\n".join(lines) + "\n")
    (out / "families.json").write_text(json.dumps(summary, indent=2, default=str))
    print("\n".join(lines))
    return summary
