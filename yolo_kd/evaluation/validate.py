"""`yolo-kd val`: COCO (pycocotools) evaluation of one or more checkpoints next to Ultralytics' own mAP.

    yolo-kd val model=teacher.pt,baseline.pt,distilled.pt data=data.yaml [imgsz= batch= conf= iou= rect= split=val
                project= name= exist_ok= device= max_det= images=]

`data` is a YOLO data.yaml, or a COCO `instances_*.json` (images found next to it, or given with `images=`).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from yolo_kd.errors import KDConfigError
from yolo_kd.evaluation.coco_dataset import find_images_dir, load_coco_dataset, read_coco_json
from yolo_kd.evaluation.coco_format import EvalSet, detections_to_coco_results, resolve_yolo_data, yolo_dataset_to_coco
from yolo_kd.evaluation.cocoeval import coco_evaluate
from yolo_kd.options import as_bool, as_float, as_int, as_str, read_options
from yolo_kd.evaluation.predict import load_detector, ultralytics_val
from yolo_kd.evaluation.report import difference_notes, per_class_table, stats_table
from yolo_kd.ultra import next_run_dir

VAL_SPEC = {
    "model": (as_str, ..., "checkpoints or exports to compare, comma-separated (a.pt,b.pt,c.onnx)"),
    "data": (as_str, ..., "a YOLO data.yaml, or a COCO instances_*.json"),
    "imgsz": (as_int, None, "evaluation size (default: the checkpoint's training size, as Ultralytics does)"),
    "batch": (as_int, 16, "images per batch"),
    "conf": (as_float, 0.001, "confidence threshold (Ultralytics' val default, for a full PR curve)"),
    "iou": (as_float, 0.7, "NMS IoU threshold"),
    "max_det": (as_int, 300, "most detections per image"),
    "rect": (as_bool, True, "rectangular batches, as Ultralytics' val (False: square letterbox, as an export sees)"),
    "split": (as_str, "val", "split of data.yaml to evaluate (val, test, train)"),
    "project": (as_str, None, "output folder (default: runs/kd_val)"),
    "name": (as_str, None, "run name (default: val, val2, ...)"),
    "exist_ok": (as_bool, False, "reuse the run folder instead of making a new one"),
    "device": (as_str, None, "cpu, 0, ... (default: Ultralytics' choice)"),
    "images": (as_str, None, "image folder of a COCO json (default: found next to it)"),
}


def check_data(data: str | Path, split: str = "val", images: str | Path | None = None) -> int:
    """Validate data= (and images=) without writing anything; returns the number of classes."""
    path = Path(data)
    if path.suffix.lower() == ".json":
        coco = read_coco_json(path)
        find_images_dir(path, coco, images)
        return len(coco["categories"])
    if path.suffix.lower() not in {".yaml", ".yml"}:
        raise KDConfigError(f"data={data} must be a YOLO data.yaml or a COCO instances_*.json")
    if images is not None:
        raise KDConfigError("images= is only for a COCO json dataset: a data.yaml names its own image folders")
    return len(resolve_yolo_data(path, split)["names"])


def load_eval_set(data: str | Path, split: str = "val", work_dir: str | Path | None = None,
                  images: str | Path | None = None) -> EvalSet:
    """A YOLO data.yaml or a COCO instances json -> EvalSet (COCO json input writes its YOLO mirror in work_dir)."""
    path = Path(data)
    if path.suffix.lower() == ".json":
        if work_dir is None:
            raise KDConfigError("a COCO json dataset needs a work folder for its YOLO mirror: pass work_dir")
        return load_coco_dataset(path, Path(work_dir) / "coco_as_yolo", images_dir=images)
    if path.suffix.lower() not in {".yaml", ".yml"}:
        raise KDConfigError(f"data={data} must be a YOLO data.yaml or a COCO instances_*.json")
    if images is not None:
        raise KDConfigError("images= is only for a COCO json dataset: a data.yaml names its own image folders")
    return yolo_dataset_to_coco(path, split)


def evaluate_checkpoint(model: str | Path, evalset: EvalSet, out_dir: str | Path, **val_args: Any) -> dict:
    """Validate `model` with Ultralytics, score the same detections with pycocotools, write predictions.json.

    Returns {"model", "predictions", "coco": 12 stats, "per_class", "ultralytics", "delta_points",
    "images_over_100_dets", "n_detections", "run"}.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ultra, detections, run = ultralytics_val(model, evalset.data_yaml, out_dir, nc=len(evalset.names),
                                             split=evalset.split, **val_args)
    results = detections_to_coco_results(detections, evalset.image_ids, evalset.category_ids)
    predictions = out_dir / "predictions.json"
    predictions.write_text(json.dumps(results), encoding="utf-8")
    coco = coco_evaluate(evalset.gt, results)
    per_image = Counter(r["image_id"] for r in results)
    return {
        "model": str(model),
        "predictions": str(predictions),
        "coco": coco["stats"],
        "per_class": coco["per_class"],
        "ultralytics": ultra,
        "delta_points": 100.0 * (coco["stats"]["mAP50-95"] - ultra["mAP50-95"]),
        "images_over_100_dets": sum(1 for n in per_image.values() if n > 100),
        "n_detections": len(results),
        "run": {k: (list(v) if isinstance(v, tuple) else v) for k, v in run.items()},
    }


def run_checkpoint(path: Path) -> bool:
    """Whether `path` is a checkpoint Ultralytics saves in a run, <run>/weights/{best,last,epochN}.pt."""
    return path.parent.name == "weights" and (path.stem in {"best", "last"} or path.stem.startswith("epoch"))


def model_labels(models: list[str]) -> list[str]:
    """Short unique column names: the run folder of <run>/weights/best.pt (or last.pt, epochN.pt), else the file stem
    (weights/teacher.pt -> teacher); <folder>/<stem> where those clash (best.pt and last.pt of one run), then a
    numeric suffix for anything still equal."""
    paths = [Path(m) for m in models]
    runs = [p.parent.parent.name if run_checkpoint(p) else "" for p in paths]
    labels = [run or p.stem for run, p in zip(runs, paths)]
    folders = [run or p.parent.name for run, p in zip(runs, paths)]
    labels = [f"{folder}/{p.stem}" if folder and labels.count(label) > 1 else label
              for folder, p, label in zip(folders, paths, labels)]
    unique: list[str] = []
    for label in labels:
        base, i = label, 2
        while label in unique:
            label, i = f"{base}_{i}", i + 1
        unique.append(label)
    return unique


def make_run_dir(project: str | None, name: str | None, default_project: str, default_name: str,
                 exist_ok: bool) -> Path:
    """A run folder named the way Ultralytics names its runs (increment_path: val, val-2, val-3...)."""
    run_dir = next_run_dir(Path(project or default_project) / (name or default_name), exist_ok=exist_ok)
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def val_command(overrides: dict) -> dict:
    """`yolo-kd val`: evaluate each checkpoint of `model` (comma-separated) with pycocotools and Ultralytics.

    Writes coco_gt.json, <model>/predictions.json and coco_metrics.json in the run folder and prints the folder,
    one side-by-side table of the 12 COCO stats (+ Ultralytics' mAP), one per-class AP table and the reason for any
    difference between the two mAPs.

    Returns {"save_dir", "coco_gt", "coco_metrics", "models": {label: evaluate_checkpoint(...)}}.
    """
    args = read_options("val", overrides, VAL_SPEC)
    models = [m.strip() for m in args["model"].split(",") if m.strip()]
    if not models:
        raise KDConfigError("model= is empty: pass model=best.pt or model=teacher.pt,student.pt")
    for m in models:
        if not Path(m).is_file():
            raise KDConfigError(f"model={m} does not exist: pass the path of a trained checkpoint (e.g. best.pt)")
    nc = check_data(args["data"], args["split"], args["images"])  # every user mistake fails before any file is written
    for m in models:
        load_detector(m, nc)

    run_dir = make_run_dir(args["project"], args["name"], "runs/kd_val", "val", args["exist_ok"])
    evalset = load_eval_set(args["data"], args["split"], work_dir=run_dir, images=args["images"])
    gt_path = run_dir / "coco_gt.json"
    gt_path.write_text(json.dumps(evalset.gt), encoding="utf-8")

    val_args = {k: args[k] for k in ("imgsz", "batch", "conf", "iou", "max_det", "rect", "device")}
    results = {}
    for label, model in zip(model_labels(models), models):
        results[label] = evaluate_checkpoint(model, evalset, run_dir / label.replace("/", "_"), **val_args)

    metrics_path = run_dir / "coco_metrics.json"
    metrics_path.write_text(json.dumps({"data": str(args["data"]), "split": evalset.split, "models": results},
                                       indent=2), encoding="utf-8")

    print(f"\nyolo-kd val: results saved to {run_dir}")
    print(f"data={args['data']} split={evalset.split}  images={len(evalset.gt['images'])}  "
          f"instances={sum(1 for a in evalset.gt['annotations'] if not a.get('iscrowd'))}  "
          + "  ".join(f"{k}={results[next(iter(results))]['run'].get(k)}"
                      for k in ("imgsz", "rect", "conf", "iou", "max_det")))
    print("\nCOCO metrics (pycocotools) beside Ultralytics' own mAP, same detections:")
    print(stats_table(results))
    print("\nPer-class AP (pycocotools, area=all, maxDets=100):")
    print(per_class_table(results))
    print()
    print("\n".join(difference_notes(results) + [f"  note: {n}" for n in evalset.notes]))
    return {"save_dir": str(run_dir), "coco_gt": str(gt_path), "coco_metrics": str(metrics_path), "models": results}
