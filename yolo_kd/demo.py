"""`yolo-kd demo [defect|agriculture] [profile=default|quick|full]`: teacher vs undistilled baseline vs distilled.

Fully offline: it makes (or converts) the domain's dataset, trains or reuses a cached teacher (weights/), trains the
baseline student and the distilled student with identical settings, evaluates all three with pycocotools and
prints and saves a table (mAP50-95, mAP50, params, GFLOPs, CPU latency per image) plus two figures.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

from .data.domains import make_domain_data
from .errors import KDConfigError
from .files import list_image_files
from .options import as_bool, as_count, as_int, as_str, optional, read_options
from .recipe import DEFAULT_METHOD
from .ultra import label_paths, resolve_dataset


@dataclass(frozen=True)
class Profile:
    """Sizes and budgets of one demo run."""

    n_train: int
    n_val: int
    imgsz: int
    teacher_epochs: int
    student_epochs: int
    batch: int
    multi_teacher: bool = False


@dataclass(frozen=True)
class Domain:
    """A demo domain: its dataset, models, distillation recipe and profiles."""

    teacher: str
    student: str
    method: str
    profiles: dict


DOMAINS = {
    "defect": Domain(
        teacher="yolov8s.yaml", student="yolov8n.yaml", method=DEFAULT_METHOD,
        profiles={
            "quick": Profile(n_train=16, n_val=8, imgsz=64, teacher_epochs=1, student_epochs=1, batch=8),
            # teacher 40 epochs: mAP50 0.63 on this data (the bench teacher), a detector that visibly detects
            "default": Profile(n_train=160, n_val=40, imgsz=128, teacher_epochs=40, student_epochs=12, batch=8),
            "full": Profile(n_train=160, n_val=40, imgsz=128, teacher_epochs=40, student_epochs=12, batch=8,
                            multi_teacher=True),
        },
    ),
    "agriculture": Domain(
        teacher="yolov8s.yaml", student="yolov8n.yaml", method=DEFAULT_METHOD,
        profiles={
            "quick": Profile(n_train=0, n_val=0, imgsz=64, teacher_epochs=1, student_epochs=1, batch=8),
            "default": Profile(n_train=0, n_val=0, imgsz=256, teacher_epochs=15, student_epochs=15, batch=8),
            "full": Profile(n_train=0, n_val=0, imgsz=256, teacher_epochs=40, student_epochs=20, batch=8),
        },
    ),
}


DEMO_SPEC = {
    "profile": (as_str, "default", "quick (a smoke run), default (about 10 min on 2 cores) or full"),
    "project": (as_str, "runs/kd_demo", "output folder"),
    "device": (as_str, "cpu", "cpu or a CUDA device"),
    "epochs": (optional(as_int), None, "student epochs (default: the profile's)"),
    "teacher_epochs": (optional(as_int), None, "teacher epochs when it is trained (default: the profile's)"),
    "imgsz": (optional(as_int), None, "image size (default: the profile's)"),
    "seed": (as_count, 0, "seed of the data and of every training run"),
    "weights": (as_str, "weights", "where trained teachers are cached and reused"),
    "overwrite": (as_bool, False, "rebuild the demo's data set under project/ (made once and reused otherwise)"),
}


def demo_command(domain: str = "defect", overrides: dict | None = None) -> dict:
    """Run a demo of `domain` with the DEMO_SPEC options."""
    if domain not in DOMAINS:
        raise KDConfigError(f"unknown demo '{domain}': choose from {sorted(DOMAINS)}")
    spec = DOMAINS[domain]
    args = read_options("demo", overrides, DEMO_SPEC)
    if args["profile"] not in spec.profiles:
        raise KDConfigError(f"unknown profile '{args['profile']}': choose from {sorted(spec.profiles)}")
    profile = spec.profiles[args["profile"]]
    for key, field in (("epochs", "student_epochs"), ("teacher_epochs", "teacher_epochs"), ("imgsz", "imgsz")):
        if args[key] is not None:
            profile = replace(profile, **{field: args[key]})
    # absolute, or Ultralytics would put a relative project under runs/detect/ and the demo would not find its runs
    project = Path(args["project"]).resolve() / f"{domain}_{args['profile']}"
    return run_demo(domain, spec, profile, args["profile"], project, args["device"], args["seed"],
                    Path(args["weights"]), args["overwrite"])


def run_demo(domain, spec, profile, profile_name, project, device, seed, weights_dir, overwrite=False) -> dict:
    """Train teacher (or reuse), baseline and distilled student; evaluate; write table and figures."""
    from ultralytics import YOLO
    from ultralytics.utils import LOGGER

    from .api import distill

    project.mkdir(parents=True, exist_ok=True)
    data = make_domain_data(domain, project / "data", profile.n_train, profile.n_val, profile.imgsz, seed, overwrite)
    train_args = dict(data=str(data), imgsz=profile.imgsz, batch=profile.batch, nbs=profile.batch, device=device,
                      seed=seed, deterministic=True, workers=2, plots=False, val=False, project=str(project),
                      exist_ok=True, close_mosaic=max(1, profile.student_epochs // 5))
    teacher_args = dict(train_args, epochs=profile.teacher_epochs, close_mosaic=max(1, profile.teacher_epochs // 6))
    teacher = cached_teacher(weights_dir / f"{domain}_teacher_{profile_name}.pt", spec.teacher,
                             dict(teacher_args, name="teacher"))
    models = {"teacher": teacher}
    YOLO(spec.student).train(**train_args, epochs=profile.student_epochs, name="baseline")
    models["baseline"] = project / "baseline" / "weights" / "best.pt"
    student = YOLO(spec.student)
    distill(student, teacher=str(teacher), method=spec.method)
    student.train(**train_args, epochs=profile.student_epochs, name="distilled")
    models[f"distilled ({spec.method})"] = project / "distilled" / "weights" / "best.pt"
    if profile.multi_teacher:
        models["multi-teacher"] = multi_teacher_student(spec, profile, teacher, weights_dir, domain, profile_name,
                                                        train_args, teacher_args)
    LOGGER.info("yolo-kd demo: evaluating with pycocotools")
    report = evaluate_models(models, data, profile.imgsz, project)
    report.update({"domain": domain, "profile": profile_name, "data": str(data)})
    (project / "demo_results.json").write_text(json.dumps(report, indent=2))
    print(report["table"])
    print(f"saved: {project / 'demo_table.md'}, {report['pr_curves']}, {report['predictions']}")
    return report


def cached_teacher(cache: Path, cfg: str, args: dict) -> Path:
    """Reuse weights/<domain>_teacher_<profile>.pt when present, else train it and store it there."""
    from ultralytics import YOLO
    from ultralytics.utils import LOGGER

    if cache.is_file():
        LOGGER.info(f"yolo-kd demo: reusing cached teacher {cache}")
        return cache
    YOLO(cfg).train(**args)
    cache.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(args["project"]) / args["name"] / "weights" / "best.pt", cache)
    return cache


def multi_teacher_student(spec, profile, color_teacher, weights_dir, domain, profile_name, train_args,
                          teacher_args) -> Path:
    """Stepwise: the colour/texture teacher (the default one, strong HSV) first, a multi-scale teacher second."""
    from ultralytics import YOLO

    from .api import distill

    scale_teacher = cached_teacher(
        weights_dir / f"{domain}_scale_teacher_{profile_name}.pt", spec.teacher,
        dict(teacher_args, name="scale_teacher", scale=0.9, multi_scale=0.25))
    recipe = {
        "teachers": {"color": str(color_teacher), "scale": str(scale_teacher)},
        "stages": [{"name": "color", "fraction": [0.0, 0.45], "teachers": ["color"], "methods": spec.method},
                   {"name": "scale", "fraction": [0.45, 0.9], "teachers": ["scale"], "methods": spec.method},
                   {"name": "student-alone", "fraction": [0.9, 1.0]}],
    }
    student = YOLO(spec.student)
    distill(student, cfg=recipe)
    student.train(**train_args, epochs=profile.student_epochs, name="multi_teacher")
    return Path(train_args["project"]) / "multi_teacher" / "weights" / "best.pt"


def evaluate_models(models: dict[str, Path], data: Path, imgsz: int, project: Path) -> dict:
    """pycocotools mAP, params, GFLOPs and CPU latency per model; table (markdown) and figures."""
    from ultralytics import YOLO

    from .evaluation import evaluate_checkpoint, load_eval_set
    from .evaluation.table import format_table
    from .export.benchmark import model_complexity
    from .plots import plot_pr_curves, plot_predictions

    evalset = load_eval_set(data, split="val", work_dir=project / "eval")
    rows, curves = {}, {}
    for label, ckpt in models.items():
        res = evaluate_checkpoint(ckpt, evalset, project / "eval" / label.split()[0], imgsz=imgsz)
        size = model_complexity(ckpt, imgsz)
        rows[label] = {"mAP50-95": res["coco"]["mAP50-95"], "mAP50": res["coco"]["mAP50"],
                       "params_M": size["params"] / 1e6, "GFLOPs": size["gflops"], "checkpoint": str(ckpt)}
        metrics = YOLO(str(ckpt)).val(data=str(data), imgsz=imgsz, plots=False, verbose=False,
                                      project=str(project / "eval"), name=f"ultra_{label.split()[0]}", exist_ok=True)
        px, prec = metrics.box.curves_results[0][:2]
        curves[label] = (px, prec.mean(0) if len(prec) else prec)
    for label, ms in interleaved_latency(models, imgsz).items():
        rows[label]["cpu_ms"] = ms
    headers = ["model", "mAP50-95", "mAP50", "params (M)", "GFLOPs", "CPU ms/img"]
    table = format_table(headers, [[k, v["mAP50-95"], v["mAP50"], v["params_M"], v["GFLOPs"], v["cpu_ms"]]
                                   for k, v in rows.items()])
    (project / "demo_table.md").write_text(markdown_table(headers, rows))
    val_images = busiest_images(list_image_files(resolve_dataset(data)["val"]), 4)
    pr = plot_pr_curves(curves, project / "pr_curves.png", f"PR curves (IoU 0.5), {len(evalset.gt['images'])} val images")
    grid = plot_predictions({k: YOLO(str(v)) for k, v in models.items()}, val_images,
                            project / "predictions.png", imgsz, conf=0.1)
    return {"models": rows, "table": table, "pr_curves": str(pr), "predictions": str(grid)}


def busiest_images(images: list, n: int) -> list[Path]:
    """The n images with the most labelled boxes (file order breaks ties): the figure shows objects, not padding."""
    def boxes(label: str) -> int:
        return len(Path(label).read_text().split()) // 5 if Path(label).is_file() else 0

    counts = [boxes(label) for label in label_paths(images)]
    order = sorted(range(len(images)), key=lambda i: -counts[i])
    return [Path(images[i]) for i in sorted(order[:n])]


def interleaved_latency(models: dict[str, Path], imgsz: int, rounds: int = 3, runs: int = 10) -> dict[str, float]:
    """Per model, the lowest of `rounds` median CPU ms/img, measured round-robin so that a busy spell on a shared
    CPU slows every model alike instead of whichever happens to be timed then."""
    from .export.benchmark import measure_latency

    best = {label: float("inf") for label in models}
    for _ in range(rounds):
        for label, ckpt in models.items():
            best[label] = min(best[label], measure_latency(ckpt, imgsz, warmup=3, runs=runs)["median_ms"])
    return best


def markdown_table(headers: list[str], rows: dict) -> str:
    """The demo table as markdown."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for label, v in rows.items():
        lines.append(f"| {label} | {v['mAP50-95']:.4f} | {v['mAP50']:.4f} | {v['params_M']:.2f} | {v['GFLOPs']:.2f} "
                     f"| {v['cpu_ms']:.1f} |")
    return "\n".join(lines) + "\n"
