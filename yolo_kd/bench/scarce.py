"""The label-scarce bench (`yolo-kd bench ... labeled_fraction=0.25`): what a teacher adds when most images have no
labels.

A fixed random `labeled_fraction` of the training images keeps its labels; the other training images become the
unlabeled pool. The teacher is trained on the labeled subset only (a bigger model, not more labels). Per seed:

- baseline: the student on the labeled subset;
- the built-in (`distill_model=`) and yolo-kd's default recipe on the labeled subset;
- yolo-kd's default recipe with `unlabeled=` the pool;
- variants of the pool row (`pool_variants=`: other recipe keys, e.g. online pseudo-boxes or another ratio); a
  variant with `teacher_guard` validates every epoch (the guard reads validation) on `guard_val=` pool images with
  their labels (`guard_split`: they stay in the pool, as in every other pool row, so the rows differ in the guard
  alone), runs all its epochs (`patience=0`: Ultralytics' early stop would end it on that validation, where the other
  rows never validate) and is scored like every row on the data set's val split, from its last.pt (no choice of epoch
  by that validation);
- the pseudo-label route: the pool labeled by the teacher (`yolo-kd label`) at each `pseudo_conf`, then the plain
  student (and, with `pseudo_builtin=True`, the built-in; with `pseudo_kd=True`, yolo-kd's default recipe) on
  labeled + pseudo-labeled images;
- the ceiling: the student on 100% of the labels.

Equal budgets: every run makes the same number of optimizer steps (`nbs` = batch, one step per batch):
`epochs x ceil(n_train / batch)` of the full set. A run on the labeled subset gets proportionally more epochs, and
every run's no-mosaic epochs are the same share of its epochs (`close_mosaic_share`). The report gives each row's
paired gain over the same seed's baseline, its paired difference from the built-in and from the pseudo-label route,
and the share of the baseline-to-ceiling gap it closes (mean gain / mean ceiling gain).

A bench run in parts (rows or seeds one invocation at a time, or resumed) reports them together: the report holds every
finished run in the bench folder made at the same budget, with the same student, teacher and training arguments
(`same_bench`), and draws them in `scarce.png`.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import yaml

from ..errors import KDConfigError
from ..files import list_image_files
from ..recipe import DEFAULT_UNLABELED_BN, DEFAULT_UNLABELED_BOXES
from .gap_plot import plot_gap
from .runs import run_jobs, slug, with_defaults
from .scarce_report import (DEFAULT_RECIPE, LABELED_ROW, markdown, same_bench, saved_runs, summarize,
                            with_earlier_runs)

ROWS = ("baseline", "builtin", "labeled", "pool", "variants", "pseudo", "ceiling")  # `rows=` picks (default: all)
TEACHER_ROWS = {"builtin", "labeled", "pool", "variants", "pseudo"}  # rows that need the teacher (a budget check needs none)


@dataclass
class Split:
    """A label-scarce split of a data set: the labeled subset's data.yaml, the pool folder, the full data.yaml; with
    `guard_val`, the labeled subset's data.yaml whose val split is that many pool images with their labels."""

    labeled_yaml: Path
    pool: Path
    full_yaml: str
    n_labeled: int
    n_pool: int
    guard_yaml: Path | None = None

    @property
    def n_full(self) -> int:
        return self.n_labeled + self.n_pool


def make_split(data_yaml: str, fraction: float, root: Path, split_seed: int = 0) -> Split:
    """Keep round(fraction * n) training images (at least 1, at most n - 1) with their labels, chosen by `split_seed`;
    the rest become `root/pool/images` (links to the originals, so pseudo-labels land in `root/pool/labels`, never
    beside the real labels). Written once; an existing split with the same settings is reused, and a bench folder
    whose runs were made on another split is refused (its runs' jobs name the same files)."""
    from ..ultra import resolve_dataset

    if not 0 < fraction < 1:
        raise KDConfigError(f"labeled_fraction={fraction} must be between 0 and 1 (e.g. 0.1 or 0.25)")
    data = resolve_dataset(data_yaml)
    images = list_image_files(data["train"])
    k = min(max(1, round(fraction * len(images))), len(images) - 1)
    chosen = set(random.Random(split_seed).sample(range(len(images)), k))
    labeled = [images[i] for i in sorted(chosen)]
    pool = [images[i] for i in range(len(images)) if i not in chosen]
    root.mkdir(parents=True, exist_ok=True)
    key = {"data": str(data_yaml), "fraction": fraction, "split_seed": split_seed, "images": len(images)}
    marker = root / "split.json"
    pool_dir = root / "pool" / "images"
    if not (marker.is_file() and json.loads(marker.read_text()) == key):
        if marker.is_file() and any(root.parent.glob("*/result.json")):
            old = json.loads(marker.read_text())
            raise KDConfigError(f"bench folder {root.parent} holds runs of another split (labeled_fraction="
                                f"{old['fraction']}, split_seed={old['split_seed']}, data={old['data']}): give this "
                                f"bench a name= of its own")
        for stale in [root / "pool", *root.glob("pseudo_conf*")]:  # another split's links and pseudo-labels
            shutil.rmtree(stale, ignore_errors=True)
        (root / "labeled.txt").write_text("".join(f"{p}\n" for p in labeled))
        pool_dir.mkdir(parents=True, exist_ok=True)
        for i, src in enumerate(pool):
            link = pool_dir / f"{i:06d}_{Path(src).name}"
            if not link.exists():
                link.symlink_to(Path(src).resolve())
        marker.write_text(json.dumps(key))
    val = data.get("val")
    labeled_yaml = root / "data_labeled.yaml"
    labeled_yaml.write_text(yaml.safe_dump({"path": str(root), "train": str(root / "labeled.txt"), "val": val,
                                            "names": data["names"]}))
    return Split(labeled_yaml, pool_dir, str(data_yaml), len(labeled), len(pool))


def guard_split(split: Split, n: int, root: Path, split_seed: int = 0) -> Split:
    """`split` with `guard_yaml`: the labeled subset's data.yaml validating on `n` pool images chosen by `split_seed`
    (their original files, whose labels lie beside them), written as `guard_val<n>.txt` / `data_guard<n>.yaml`."""
    links = sorted(split.pool.iterdir())
    if not 0 < n <= len(links):
        raise KDConfigError(f"guard_val={n} must be between 1 and the pool's {len(links)} images")
    chosen = sorted(random.Random(split_seed).sample(links, n))
    listing, guard_yaml = root / f"guard_val{n}.txt", root / f"data_guard{n}.yaml"
    root.mkdir(parents=True, exist_ok=True)
    listing.write_text("".join(f"{p.resolve()}\n" for p in chosen))
    data = yaml.safe_load(split.labeled_yaml.read_text())
    guard_yaml.write_text(yaml.safe_dump({**data, "val": str(listing)}))
    return replace(split, guard_yaml=guard_yaml)


def pseudo_labeled_yaml(split: Split, teacher: str, conf: float, root: Path) -> tuple[Path, dict]:
    """Label the pool with the teacher at `conf` (`yolo-kd label`, once per teacher and conf; the labels land in a
    folder of links of their own, `root/pseudo_conf<conf>/`) and return (a data.yaml that trains on the labeled
    subset plus the pseudo-labeled pool, the labelling summary)."""
    from ..label import label_images
    from ..ultra import resolve_dataset

    folder = root / f"pseudo_conf{conf:g}"
    images = folder / "images"
    key = {"teacher": str(teacher), "mtime": Path(teacher).stat().st_mtime, "conf": conf}
    marker = folder / "pseudo.json"
    if not (marker.is_file() and json.loads(marker.read_text()) == key):
        shutil.rmtree(folder, ignore_errors=True)
        images.mkdir(parents=True)
        for link in sorted(split.pool.iterdir()):
            (images / link.name).symlink_to(link.resolve())
        summary = label_images(teacher, str(images), conf=conf, overwrite=True)
        (folder / "summary.json").write_text(json.dumps(summary))
        marker.write_text(json.dumps(key))
    data = resolve_dataset(str(split.labeled_yaml))
    path = folder / "data_pseudo.yaml"
    path.write_text(yaml.safe_dump({"path": str(root), "train": [str(root / "labeled.txt"), str(images)],
                                    "val": data.get("val"), "names": data["names"]}))
    return path, json.loads((folder / "summary.json").read_text())


def check_teacher(out: Path, identity: dict) -> None:
    """One teacher per bench folder: its distilled and pseudo-labeled runs name the same teacher and label files
    whoever made them, so the first invocation that needs the teacher records it (`teacher.json`: the teacher's job,
    and a given checkpoint's mtime) and a later one with another teacher is refused while such runs exist."""
    marker = out / "teacher.json"
    if marker.is_file() and with_defaults(json.loads(marker.read_text())) != identity:
        used = [folder.name for folder, saved in saved_runs(out)
                if saved.get("job", {}).get("kind") not in {"teacher", "baseline", "ceiling"}]
        if used:
            raise KDConfigError(f"bench folder {out} holds {len(used)} runs of another teacher (e.g. {used[0]}): "
                                f"give this bench a name= of its own, or keep the teacher and its settings")
    tmp = marker.with_name(f".{marker.name}.{os.getpid()}")  # renamed into place: a bench started beside this one
    tmp.write_text(json.dumps(identity))  # reads the old marker or the new one, never a half-written file
    os.replace(tmp, marker)


def epochs_for(steps: int, images: int, batch: int) -> int:
    """Epochs that make `steps` optimizer steps over `images` at `batch` (one step per batch), at least 1."""
    return max(1, round(steps / math.ceil(images / batch)))


def parse_variant(text: str) -> dict:
    """A pool row's recipe keys, `key:value/key:value` (e.g. `unlabeled_boxes:0.5/unlabeled_ratio:2`), values read
    as YAML scalars."""
    pairs = [p.split(":", 1) for p in text.split("/") if p.strip()]
    if not pairs or any(len(p) != 2 or not p[0].strip() for p in pairs):
        raise KDConfigError(f"pool_variants entry {text!r} must be key:value[/key:value], e.g. unlabeled_boxes:0.5")
    return {k.strip(): yaml.safe_load(v.strip()) for k, v in pairs}


def variant_label(keys: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in keys.items())


def budget(opts: dict, split: Split) -> tuple[int, int, int]:
    """Every row's budget: (optimizer steps = `epochs` x ceil(n_full / batch), epochs of a run on the labeled subset,
    epochs of a run on the full set)."""
    steps = opts["epochs"] * math.ceil(split.n_full / opts["batch"])
    return steps, epochs_for(steps, split.n_labeled, opts["batch"]), opts["epochs"]


def plan(opts: dict, train_args: dict, split: Split, teacher: str, pseudo_yamls: dict[float, Path]) -> list:
    """The runs, seed by seed, at equal optimizer steps."""
    from .runs import Job

    share = opts["close_mosaic_share"]
    _, sub_epochs, full_epochs = budget(opts, split)
    kd = {"teacher": teacher, "method": DEFAULT_RECIPE}
    jobs = []
    for seed in opts["seeds"]:
        def job(label, kind, data, epochs, kd=None, extra=None, **scoring):
            args = {**train_args, **(extra or {}), "data": str(data), "epochs": epochs, "seed": seed,
                    "close_mosaic": max(1, round(share * epochs)), "name": f"{slug(label)}_s{seed}"}
            return Job(label=label, kind=kind, model=opts["model"], seed=seed, train_args=args, kd=kd or {},
                       eval_imgsz=opts["imgsz"], **scoring)

        labeled, want = split.labeled_yaml, set(opts.get("rows") or ROWS)
        candidates = [("baseline", job("baseline (labeled subset)", "baseline", labeled, sub_epochs))]
        if opts["builtin"]:
            candidates.append(("builtin", job(f"Ultralytics KD (dis={opts['dis']:g})", "builtin", labeled, sub_epochs,
                                              extra={"distill_model": teacher, "dis": opts["dis"]})))
        candidates.append(("labeled", job(LABELED_ROW, "yolo-kd", labeled, sub_epochs, kd=kd)))
        for bn in opts.get("unlabeled_bn") or [DEFAULT_UNLABELED_BN]:
            suffix = "" if bn == DEFAULT_UNLABELED_BN else f" (unlabeled_bn={bn})"
            candidates.append(("pool", job(f"yolo-kd {DEFAULT_RECIPE} + unlabeled pool{suffix}", "yolo-kd", labeled,
                                           sub_epochs, kd={**kd, "unlabeled": str(split.pool), "unlabeled_bn": bn,
                                                         "unlabeled_boxes": DEFAULT_UNLABELED_BOXES})))
        for keys in map(parse_variant, opts.get("pool_variants") or []):
            guarded = ({"extra": {"val": True, "patience": 0}, "eval_data": str(labeled), "scored": "last"}
                       if keys.get("teacher_guard") else {})  # no early stop: the rows without validation never stop
            candidates.append(("variants", job(f"yolo-kd {DEFAULT_RECIPE} + unlabeled pool ({variant_label(keys)})",
                                           "yolo-kd", split.guard_yaml if guarded else labeled, sub_epochs,
                                           kd={**kd, "unlabeled": str(split.pool), **keys}, **guarded)))
        for conf, pseudo_yaml in pseudo_yamls.items():
            candidates.append(("pseudo", job(f"pseudo-labels (yolo-kd label conf={conf:g}) + plain student", "pseudo",
                                             pseudo_yaml, full_epochs)))
            if opts["pseudo_builtin"]:
                candidates.append(("pseudo", job(f"pseudo-labels (conf={conf:g}) + Ultralytics KD "
                                                 f"(dis={opts['dis']:g})", "pseudo-builtin", pseudo_yaml, full_epochs,
                                                 extra={"distill_model": teacher, "dis": opts["dis"]})))
            if opts.get("pseudo_kd"):
                candidates.append(("pseudo", job(f"pseudo-labels (conf={conf:g}) + {LABELED_ROW}", "pseudo-kd",
                                                 pseudo_yaml, full_epochs, kd=kd)))
        candidates.append(("ceiling", job("ceiling: baseline on 100% of the labels", "ceiling", split.full_yaml,
                                          full_epochs)))
        jobs += [j for row, j in candidates if row in want]
    return jobs


def scarce_bench(opts: dict, train_args: dict, data: str, out: Path) -> dict:
    """Run the label-scarce bench; writes scarce.md, scarce.json and scarce.png (this invocation's runs and the
    earlier ones of the same bench) under `out` and returns the summary."""
    from ultralytics.utils import LOGGER

    from .machine import machine_note
    from .provenance import code_note
    from .runs import Job, launch

    split = make_split(data, opts["labeled_fraction"], out / "split", opts["split_seed"])
    if any(parse_variant(v).get("teacher_guard") for v in opts.get("pool_variants") or []):  # guard_val checked
        split = guard_split(split, opts["guard_val"], out / "split", opts["split_seed"])
    batch = opts["batch"]
    steps, sub_epochs, full_epochs = budget(opts, split)
    teacher = str(opts["teacher"])
    train_teacher = teacher.endswith((".yaml", ".yml"))
    teacher_epochs = epochs_for((opts["teacher_epochs"] or 3 * opts["epochs"]) * math.ceil(split.n_full / batch),
                                split.n_labeled, batch)
    teacher_job = Job(label="teacher", kind="teacher", model=teacher, seed=0, eval_imgsz=opts["imgsz"],
                      train=train_teacher,
                      train_args={**train_args, "data": str(split.labeled_yaml), "seed": 0, "name": "teacher",
                                  "epochs": teacher_epochs,
                                  "close_mosaic": max(1, round(opts["close_mosaic_share"] * teacher_epochs))})
    rows_wanted = set(opts.get("rows") or ROWS)
    teacher_result = None
    if rows_wanted & TEACHER_ROWS:
        check_teacher(out, {**asdict(teacher_job), "mtime": None if train_teacher else Path(teacher).stat().st_mtime})
        doing = "training the teacher on the labeled subset" if train_teacher else "scoring the given teacher"
        LOGGER.info(f"yolo-kd bench: {split.n_labeled} labeled images, {split.n_pool} unlabeled; {doing}")
        teacher_result = launch(teacher_job)
        teacher = teacher_result["checkpoint"]
    confs = opts["pseudo_conf"] if "pseudo" in rows_wanted else []
    labelled = {conf: pseudo_labeled_yaml(split, teacher, conf, out / "split") for conf in confs}
    pseudo = {conf: summary for conf, (_, summary) in labelled.items()}
    jobs = plan(opts, train_args, split, teacher, {conf: path for conf, (path, _) in labelled.items()})
    results = [{**r, "epochs": job.train_args["epochs"]} for job, r in zip(jobs, run_jobs(jobs))]
    results = with_earlier_runs(results, jobs, out, lambda job: same_bench(
        job, train_args, opts["model"], opts["imgsz"], str(teacher_job.checkpoint),
        {str(split.labeled_yaml), *map(str, out.joinpath("split").glob("data_guard*.yaml"))}, sub_epochs, full_epochs))
    earlier = sum(bool(r.get("earlier")) for r in results)
    if teacher_result is None and teacher_job.result_file.is_file() and any(
            r["kind"] not in {"baseline", "ceiling"} for r in results):  # earlier distilled or pseudo-label runs
        teacher_result = json.loads(teacher_job.result_file.read_text())["result"]
    rows = summarize(results)
    settings = {"data": data, "model": opts["model"], "teacher": opts["teacher"], "epochs": opts["epochs"],
                "imgsz": opts["imgsz"], "batch": batch, "seeds": sorted({r["seed"] for r in results}),
                "labeled_fraction": opts["labeled_fraction"], "split_seed": opts["split_seed"],
                "pseudo_conf": opts["pseudo_conf"], "device": opts["device"],
                **({"guard_val": opts["guard_val"]} if opts.get("guard_val") else {})}
    text = (markdown(rows, teacher_result, settings, split.n_labeled, split.n_pool, steps, pseudo, earlier)
            + machine_note(results) + code_note(results))
    summary = {"settings": settings, "steps": steps, "teacher": teacher_result, "pseudo": pseudo, "rows": rows,
               "runs": results}
    (out / "scarce.md").write_text(text)
    (out / "scarce.json").write_text(json.dumps(summary, indent=2, default=str))
    title = (f"{Path(data).parent.name if Path(data).name == 'data.yaml' else data}: {split.n_labeled} labeled, "
             f"{split.n_pool} unlabeled images, {steps} steps")
    figure = plot_gap(rows, out / "scarce.png", title)
    print(text)
    print(f"saved: {out / 'scarce.md'}, {out / 'scarce.json'}" + (f", {figure}" if figure else ""))
    return summary
