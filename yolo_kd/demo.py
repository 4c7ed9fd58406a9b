"""`yolo-kd demo [defect|agriculture] [profile=default|quick|full]`: teacher vs undistilled baseline vs distilled.

Fully offline: it makes (or converts) the domain's dataset, trains or reuses a cached teacher (weights/), then for
each of the profile's seeds (default 1, 2, 3) trains the baseline student, the distilled student and, where the
domain has images without labels (defect: generated), the distilled student with that unlabeled pool, all with
identical settings. Every model is scored with pycocotools; each distilled run is paired with the same seed's
baseline and the table gives the mean gain with its 95% interval and says "inside the noise" when the interval holds
0 (one seed of a dozen CPU epochs is inside a 2-3 point spread: no single seed is reported). It saves the table,
`pr_curves.png` and `predictions.png` (the ground truth beside each model's boxes).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

from .data.domains import make_domain_data
from .errors import KDConfigError
from .files import list_image_files
from .options import as_bool, as_count, as_int, as_list, as_str, optional, read_options
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
    seeds: tuple[int, ...] = (1, 2, 3)  # paired seeds: each seed's distilled students against its own baseline
    n_unlabeled: int = 0  # images without labels made for the unlabeled-pool row (defect: generated)
    n_labeled: int = 0  # the students' labels: the first n_labeled training images keep theirs, the other training
    #                    images join the unlabeled pool (the teacher learnt from all of them); 0: every image labeled
    labeled_only: bool = True  # also the student distilled on the labeled images alone (without the pool)
    lr0: float = 0.0  # AdamW at this learning rate for every model (0: Ultralytics' automatic optimizer choice)
    workers: int = 2  # loader workers (0 is as fast on two cores at these sizes, and spawns no processes)


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
            "quick": Profile(n_train=16, n_val=8, imgsz=64, teacher_epochs=1, student_epochs=1, batch=8,
                             seeds=(1, 2), n_unlabeled=8, n_labeled=8),
            # label-scarce, the user's usual case: a teacher trained on 160 labeled images, students with 40 of those
            # labels and 280 images without (120 whose labels they never see, 160 more); 160 val images, so the
            # metric is not the noise; students 20 epochs of 40 images = 100 optimizer steps at AdamW lr 0.004
            # (Ultralytics' automatic 0.001 leaves a 120-step student at mAP 0); 96 px and the baseline and pool
            # rows only, so that it all fits in ten minutes on two CPU cores
            "default": Profile(n_train=160, n_val=160, imgsz=96, teacher_epochs=12, student_epochs=20, batch=8,
                               n_unlabeled=160, n_labeled=40, labeled_only=False, lr0=0.004, workers=0),
            "full": Profile(n_train=160, n_val=200, imgsz=128, teacher_epochs=40, student_epochs=32, batch=8,
                            multi_teacher=True, n_unlabeled=160, n_labeled=40),
        },
    ),
    "agriculture": Domain(
        teacher="yolov8s.yaml", student="yolov8n.yaml", method=DEFAULT_METHOD,
        profiles={
            "quick": Profile(n_train=0, n_val=0, imgsz=64, teacher_epochs=1, student_epochs=1, batch=8, seeds=(1, 2)),
            "default": Profile(n_train=0, n_val=0, imgsz=256, teacher_epochs=15, student_epochs=15, batch=8),
            "full": Profile(n_train=0, n_val=0, imgsz=256, teacher_epochs=40, student_epochs=20, batch=8),
        },
    ),
}


DEMO_SPEC = {
    "profile": (as_str, "default", "quick (a smoke run), default (3 paired seeds) or full"),
    "project": (as_str, "runs/kd_demo", "output folder"),
    "device": (as_str, "cpu", "cpu or a CUDA device"),
    "epochs": (optional(as_int), None, "student epochs (default: the profile's)"),
    "teacher_epochs": (optional(as_int), None, "teacher epochs when it is trained (default: the profile's)"),
    "imgsz": (optional(as_int), None, "image size (default: the profile's)"),
    "seed": (as_count, 0, "seed of the generated data"),
    "seeds": (optional(as_list(int)), None, "training seeds, each distilled run paired with its baseline "
                                            "(default: the profile's, 1,2,3)"),
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
    for key, field in (("epochs", "student_epochs"), ("teacher_epochs", "teacher_epochs"), ("imgsz", "imgsz"),
                       ("seeds", "seeds")):
        if args[key] is not None:
            profile = replace(profile, **{field: args[key]})
    # absolute, or Ultralytics would put a relative project under runs/detect/ and the demo would not find its runs
    project = Path(args["project"]).resolve() / f"{domain}_{args['profile']}"
    return run_demo(domain, spec, profile, args["profile"], project, args["device"], args["seed"],
                    Path(args["weights"]), args["overwrite"])


def run_demo(domain, spec, profile, profile_name, project, device, seed, weights_dir, overwrite=False) -> dict:
    """Train the teacher (or reuse it), then per seed the baseline, the distilled student and (with a pool) the
    distilled student with unlabeled images; evaluate; write the paired table and the figures."""
    from ultralytics import YOLO
    from ultralytics.utils import LOGGER

    from .api import distill
    from .hooks import reseed

    start = time.time()
    project.mkdir(parents=True, exist_ok=True)
    data = make_domain_data(domain, project / "data", profile.n_train, profile.n_val, profile.imgsz, seed, overwrite)
    student_data, hidden = student_split(data, profile.n_labeled, project / "data")
    generated = unlabeled_pool(domain, project / "pool", profile, seed, overwrite)
    pool = [str(p) for p in (hidden, generated) if p]
    train_args = dict(imgsz=profile.imgsz, batch=profile.batch, nbs=profile.batch, device=device,
                      deterministic=True, workers=profile.workers, plots=False, val=False, project=str(project),
                      exist_ok=True, **({"optimizer": "AdamW", "lr0": profile.lr0} if profile.lr0 else {}))
    teacher_args = dict(train_args, data=str(data), seed=seed, epochs=profile.teacher_epochs,
                        close_mosaic=max(1, profile.teacher_epochs // 6))
    train_args.update(data=str(student_data), epochs=profile.student_epochs,
                      close_mosaic=max(1, profile.student_epochs // 5))
    teacher = cached_teacher(weights_dir / f"{domain}_teacher_{profile_name}.pt", spec.teacher,
                             dict(teacher_args, name="teacher"))
    distilled = f"distilled ({spec.method})"
    runs: dict[str, list[Path]] = {"baseline": []}
    if profile.labeled_only or not pool:
        runs[distilled] = []
    if pool:
        runs[f"{distilled} + unlabeled pool"] = []
    for i, s in enumerate(profile.seeds, 1):
        LOGGER.info(f"yolo-kd demo: seed {s} ({i} of {len(profile.seeds)}): {', '.join(runs)}")
        args = dict(train_args, seed=s)
        baseline = YOLO(spec.student)
        baseline.add_callback("on_train_epoch_start", reseed)  # the random stream its distilled pair draws
        baseline.train(**args, name=f"baseline_s{s}")
        runs["baseline"].append(project / f"baseline_s{s}" / "weights" / "best.pt")
        for label, extra, name in ((distilled, {}, "distilled"), (f"{distilled} + unlabeled pool",
                                                                 {"unlabeled": pool}, "unlabeled")):
            if label in runs:
                student = YOLO(spec.student)
                distill(student, teacher=str(teacher), method=spec.method, **extra)
                student.train(**args, name=f"{name}_s{s}")
                runs[label].append(project / f"{name}_s{s}" / "weights" / "best.pt")
    if profile.multi_teacher:
        runs["multi-teacher"] = [multi_teacher_student(spec, profile, teacher, weights_dir, domain, profile_name,
                                                       dict(train_args, seed=s), teacher_args)
                                 for s in profile.seeds]
    LOGGER.info("yolo-kd demo: evaluating with pycocotools")
    report = evaluate_models(teacher, runs, data, profile.imgsz, project, list(profile.seeds))
    seconds = time.time() - start
    report.update({"domain": domain, "profile": profile_name, "data": str(data), "seeds": list(profile.seeds),
                   "unlabeled": pool or None, "labeled": profile.n_labeled or profile.n_train, "seconds": seconds})
    (project / "demo_results.json").write_text(json.dumps(report, indent=2))
    print(report["table"])
    print(report["verdict"])
    print(f"saved: {project / 'demo_table.md'}, {report['pr_curves']}, {report['predictions']}")
    print(f"yolo-kd demo: {seconds / 60:.1f} minutes on this machine, data and teacher included "
          f"({os.cpu_count()} CPU cores)")
    if profile_name == "quick":
        print("yolo-kd demo: profile=quick is a smoke run (a few images, one epoch): its numbers show that everything "
              "runs, not what distillation gains; run `yolo-kd demo` for that")
    return report


def student_split(data: Path, n_labeled: int, root: Path) -> tuple[Path, Path | None]:
    """The students' data.yaml and the training images whose labels they do not get: with `n_labeled`, the first
    n_labeled training images keep their labels (`student.yaml`, listed in `student_labeled.txt`) and the others
    are listed in `hidden_labels.txt`, for the unlabeled pool; without, the data set itself and None."""
    if not n_labeled:
        return data, None
    import yaml

    resolved = resolve_dataset(data)
    images = list_image_files(resolved["train"])
    if not 0 < n_labeled < len(images):
        raise KDConfigError(f"the demo keeps {n_labeled} labeled images of {len(images)}: use fewer")
    labeled, hidden = root / "student_labeled.txt", root / "hidden_labels.txt"
    labeled.write_text("".join(f"{p}\n" for p in images[:n_labeled]))
    hidden.write_text("".join(f"{p}\n" for p in images[n_labeled:]))
    student = root / "student.yaml"
    student.write_text(yaml.safe_dump({"path": str(root), "train": str(labeled), "val": str(resolved["val"]),
                                       "names": resolved["names"]}, sort_keys=False))
    return student, hidden


def unlabeled_pool(domain: str, root: Path, profile: Profile, seed: int, overwrite: bool) -> Path | None:
    """The demo's generated images without labels: for the defect domain, `n_unlabeled` more procedural images
    (another seed, the same generator), whose label files are removed so nothing could read them; None without."""
    if not profile.n_unlabeled or domain != "defect":
        return None
    from .data.steel import make_steel_dataset

    images = root / "images" / "train"
    if overwrite or not images.is_dir():
        make_steel_dataset(root, n_train=profile.n_unlabeled, n_val=1, imgsz=max(profile.imgsz, 128),
                           seed=seed + 1000, overwrite=True)
        shutil.rmtree(root / "labels", ignore_errors=True)
    return images


def cached_teacher(cache: Path, cfg: str, args: dict) -> Path:
    """Reuse weights/<domain>_teacher_<profile>.pt when it was trained with these settings (its .json beside it says
    so), else train it and store it there."""
    from ultralytics import YOLO
    from ultralytics.utils import LOGGER

    key = {"cfg": cfg, **{k: args.get(k) for k in ("epochs", "imgsz", "batch", "seed", "close_mosaic", "optimizer",
                                                   "lr0")}}
    settings = cache.with_suffix(".json")
    if cache.is_file() and (not settings.is_file() or json.loads(settings.read_text()) == key):
        LOGGER.info(f"yolo-kd demo: reusing cached teacher {cache}")
        return cache
    if cache.is_file():
        LOGGER.info(f"yolo-kd demo: the cached teacher {cache} was trained with other settings; training it again")
    YOLO(cfg).train(**args)
    cache.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(args["project"]) / args["name"] / "weights" / "best.pt", cache)
    settings.write_text(json.dumps(key))
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
    name = f"multi_teacher_s{train_args['seed']}"
    student.train(**train_args, name=name)
    return Path(train_args["project"]) / name / "weights" / "best.pt"


def evaluate_models(teacher: Path, runs: dict[str, list[Path]], data: Path, imgsz: int, project: Path,
                    seeds: list[int]) -> dict:
    """pycocotools mAP of the teacher and of every seed's students; each distilled row's gain paired with the
    baseline of the same seed (mean with its 95% interval); params, GFLOPs and CPU latency per architecture; the
    table (markdown), a one-line verdict and the figures (the first seed's students)."""
    from ultralytics import YOLO

    from .bench.runs import slug
    from .bench.report import mean_ci95, verdict
    from .evaluation import evaluate_checkpoint, load_eval_set
    from .export.benchmark import model_complexity
    from .plots import plot_pr_curves, plot_predictions

    evalset = load_eval_set(data, split="val", work_dir=project / "eval")

    def score(label, ckpt):
        res = evaluate_checkpoint(ckpt, evalset, project / "eval" / label, imgsz=imgsz)
        return res["coco"]["mAP50-95"], res["coco"]["mAP50"]

    first = {"teacher": teacher, **{label: ckpts[0] for label, ckpts in runs.items()}}
    latency = interleaved_latency(first, imgsz)
    rows = {}
    t_map, t_map50 = score("teacher", teacher)
    rows["teacher"] = {"mAP50-95": [t_map], "mAP50": [t_map50], "checkpoints": [str(teacher)]}
    for label, ckpts in runs.items():
        scores = [score(f"{slug(label)}_s{s}", c) for s, c in zip(seeds, ckpts)]
        rows[label] = {"mAP50-95": [m for m, _ in scores], "mAP50": [m for _, m in scores],
                       "checkpoints": [str(c) for c in ckpts]}
    base = rows["baseline"]["mAP50-95"]
    for label, row in rows.items():
        size = model_complexity(first[label], imgsz)
        row.update(params_M=size["params"] / 1e6, GFLOPs=size["gflops"], cpu_ms=latency[label])
        if label not in {"teacher", "baseline"}:
            row["gains"] = [100 * (m - b) for m, b in zip(row["mAP50-95"], base)]
            row["gain_ci95"] = mean_ci95(row["gains"])
            row["verdict"] = verdict(*row["gain_ci95"])
    table = markdown_table(rows, seeds)
    (project / "demo_table.md").write_text(table)
    curves = {}
    for label, ckpt in first.items():
        metrics = YOLO(str(ckpt)).val(data=str(data), imgsz=imgsz, plots=False, verbose=False,
                                      project=str(project / "eval"), name=f"ultra_{slug(label)}", exist_ok=True)
        px, prec = metrics.box.curves_results[0][:2]
        curves[label] = (px, prec.mean(0) if len(prec) else prec)
    val_images = busiest_images(list_image_files(resolve_dataset(data)["val"]), 4)
    pr = plot_pr_curves(curves, project / "pr_curves.png",
                        f"PR curves (IoU 0.5), {len(evalset.gt['images'])} val images, seed {seeds[0]}")
    grid = plot_predictions({k: YOLO(str(v)) for k, v in first.items()}, val_images, project / "predictions.png",
                            imgsz, conf=0.1, names=resolve_dataset(data)["names"])
    return {"models": rows, "table": table, "verdict": verdict_line(rows, len(seeds)), "pr_curves": str(pr),
            "predictions": str(grid)}


def verdict_line(rows: dict, n_seeds: int) -> str:
    """One sentence per distilled row: its paired gain and whether the interval excludes 0."""
    parts = []
    for label, row in rows.items():
        if "gains" in row:
            mean, half = row["gain_ci95"]
            word = {"above 0": "a gain", "below 0": "a loss", "inside the noise": "inside the noise"}[row["verdict"]]
            parts.append(f"{label}: {mean:+.2f} ± {half:.2f} mAP50-95 points over the baseline ({word})")
    return f"yolo-kd demo, {n_seeds} paired seeds (95% interval): " + "; ".join(parts)


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


def markdown_table(rows: dict, seeds: list[int]) -> str:
    """The demo table as markdown: mean ± sd over seeds, the paired gain with its 95% interval and its verdict."""
    from .bench.report import mean_std

    lines = ["| model | mAP50-95 | mAP50 | gain (points, 95% CI) | verdict | params (M) | GFLOPs | CPU ms/img |",
             "|---|---|---|---|---|---|---|---|"]
    for label, v in rows.items():
        m, sd = mean_std(v["mAP50-95"])
        m50, _ = mean_std(v["mAP50"])
        gain = f"{v['gain_ci95'][0]:+.2f} ± {v['gain_ci95'][1]:.2f}" if "gains" in v else ""
        lines.append(f"| {label} | {m:.4f}" + (f" ± {sd:.4f}" if len(v["mAP50-95"]) > 1 else "")
                     + f" | {m50:.4f} | {gain} | {v.get('verdict', '')} | {v['params_M']:.2f} | {v['GFLOPs']:.2f} "
                     f"| {v['cpu_ms']:.1f} |")
    lines.append("")
    lines.append(f"Students: mean ± sd over seeds {', '.join(map(str, seeds))}; gain: each seed's run minus the same "
                 "seed's baseline, mean with its 95% interval (Student t); latency and figures: the first seed.")
    return "\n".join(lines) + "\n"
