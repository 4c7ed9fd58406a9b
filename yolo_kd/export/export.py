"""`yolo-kd export`: export a checkpoint through Ultralytics, optionally INT8, and compare it with the PyTorch model.

    yolo-kd export model=best.pt format=onnx|torchscript|openvino|tflite|engine [int8=True] [imgsz=] [data=]
                   [split=val calib=200 int8_act=int8|uint8 runs=50 warmup=10 threads= device=
                    project= name= exist_ok= opset= simplify=]

The exported file lands beside the checkpoint (Ultralytics' `YOLO(model).export`). `int8=True format=onnx` adds
`<stem>_int8.onnx` (onnxruntime static QDQ quantisation calibrated on `calib` training images of data=).

With `data=`, every file is evaluated through the same path: `YOLO(file).val` (Ultralytics' AutoBackend runs the
ONNX file in onnxruntime) with detections captured and scored by pycocotools. Going through AutoBackend rather than a
hand-written onnxruntime loop means letterboxing, NMS and box rescaling are the very code used for the PyTorch
model, so the mAP delta measures only what the export changed. The PyTorch model is evaluated with rect=False
because a static-shape export always sees square letterboxed inputs (Ultralytics forces rect=False for it).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from yolo_kd.errors import KDConfigError
from yolo_kd.evaluation.coco_dataset import find_images_dir, read_coco_json
from yolo_kd.evaluation.coco_format import resolve_yolo_data
from yolo_kd.files import list_image_files
from yolo_kd.options import as_bool, as_count, as_float, as_int, as_str, existing_file, read_options
from yolo_kd.evaluation.table import format_table
from yolo_kd.ultra import grid_imgsz
from yolo_kd.evaluation.validate import evaluate_checkpoint, load_eval_set, make_run_dir
from yolo_kd.export.benchmark import file_size_mb, measure_latency, model_complexity
from yolo_kd.export.int8 import quantize_onnx_int8, select_calibration_images
from yolo_kd.export.requirements import ULTRALYTICS_FORMAT, canonical_format, check_export_requirements

#: FP32 export must stay within this many mAP50-95 points of PyTorch
PARITY_POINTS = 0.5

FORMAT_TITLES = {"onnx": "ONNX", "torchscript": "TorchScript", "openvino": "OpenVINO", "tflite": "TFLite",
                 "engine": "TensorRT"}


def as_calib(key: str, value) -> int | float:
    """Calibration set size: a whole number of images (200) or a fraction of the train split (0.25)."""
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        number = -1.0
    if "." in text or 0 < number < 1:
        if not 0 < number <= 1:
            raise KDConfigError(f"{key}={value} must be an image count (e.g. 200) or a fraction in (0, 1] (e.g. 0.25)")
        return number
    return as_int(key, value, minimum=1)


EXPORT_SPEC = {
    "model": (as_str, ..., "the checkpoint to export (.pt)"),
    "format": (as_str, "onnx", "onnx, torchscript, openvino, tflite or engine"),
    "int8": (as_bool, False, "also quantise to INT8 (needs data= for calibration images)"),
    "imgsz": (as_int, None, "export size (default: the checkpoint's training size, as Ultralytics does)"),
    "data": (as_str, None, "a data.yaml or COCO json: evaluate every file on it (INT8 calibrates on its train split)"),
    "split": (as_str, "val", "split to evaluate on"),
    "calib": (as_calib, 200, "INT8 calibration images: a count (200) or a fraction of the train split (0.25)"),
    "int8_act": (as_str, "int8", "int8 (S8S8) or uint8 (U8S8 + reduce_range: faster on AVX2 x86 without VNNI)"),
    "batch": (as_int, 16, "evaluation batch of the PyTorch model (exports run at batch 1)"),
    "conf": (as_float, 0.001, "evaluation confidence threshold"),
    "iou": (as_float, 0.7, "evaluation NMS IoU threshold"),
    "runs": (as_count, 50, "timed latency runs per file (0: no latency)"),
    "warmup": (as_count, 10, "untimed warm-up runs before them"),
    "threads": (as_int, None, "CPU threads for latency (default: all cores), the same for every runtime"),
    "device": (as_str, None, "cpu, or 0 for TensorRT (default: cpu; 0 for engine)"),
    "project": (as_str, None, "evaluation output folder (default: runs/kd_export)"),
    "name": (as_str, None, "evaluation run name (default: export, export2, ...)"),
    "exist_ok": (as_bool, False, "reuse the evaluation run folder"),
    "opset": (as_int, None, "ONNX opset (default: Ultralytics' choice)"),
    "simplify": (as_bool, True, "simplify the ONNX graph (onnxslim)"),
}

#: Why an export's scores differ from `yolo-kd val` on the same .pt, printed beside them
RECT_NOTE = ("scores use rect=False (square letterboxed inputs, what a fixed-shape export sees); yolo-kd val uses "
             "rect=True as Ultralytics' val does, so its score of the same .pt can differ; "
             "yolo-kd val model={model} data={data} rect=False gives this one")


def _snapshot(folder: Path) -> dict[str, int]:
    return {e.name: e.stat(follow_symlinks=False).st_mtime_ns for e in os.scandir(folder)}


def _remove_new_entries(folder: Path, before: dict[str, int], stem: str, keep: str) -> list[str]:
    """Delete the export artifacts (`<stem>*` entries other than `keep`) that appeared in `folder` or were rewritten
    in it since `before`: a failed export's partial output. Unrelated files are never touched."""
    removed = []
    for entry in os.scandir(folder):
        if not entry.name.startswith(stem) or entry.name == keep:
            continue
        if entry.name in before and entry.stat(follow_symlinks=False).st_mtime_ns == before[entry.name]:
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            Path(entry.path).unlink(missing_ok=True)
        removed.append(entry.name)
    return removed


def calibration_images(data: str, calib: int | float) -> list[str]:
    """Calibration images from the train split of a data.yaml (or the images of a COCO json), spread evenly."""
    if Path(data).suffix.lower() == ".json":
        coco = read_coco_json(data)
        root = find_images_dir(Path(data), coco)
        files = sorted(str(root / im["file_name"]) for im in coco["images"])
    else:
        info = resolve_yolo_data(data, "train")
        files = list_image_files(info["train"])
    return select_calibration_images(files, calib)


def _check_data(data: str, split: str, int8: bool, fmt: str) -> None:
    """Fail on a bad data= before anything is exported."""
    if Path(data).suffix.lower() == ".json":
        if int8 and fmt != "onnx":
            raise KDConfigError(f"int8=True format={fmt} calibrates through Ultralytics, which needs a YOLO data.yaml: "
                                "pass data=data.yaml")
        read_coco_json(data)
    else:
        resolve_yolo_data(data, split)


def export_command(overrides: dict) -> dict:
    """`yolo-kd export`: export, optionally quantise, and (with data=) compare mAP/latency/size with PyTorch.

    Returns {"format", "files": {label: path}, "models": {label: row}, "parity": {...} or None, "save_dir"}.
    Each row has file, size_mb, params, gflops, latency (dict), and with data= coco (12 stats), ultralytics,
    delta_points (COCO mAP50-95 minus PyTorch's, in points).
    """
    args = read_options("export", overrides, EXPORT_SPEC)
    model = existing_file("model", args["model"], (".pt",))
    fmt = canonical_format(args["format"])
    int8, data = args["int8"], args["data"]
    if args["int8_act"] not in {"int8", "uint8"}:
        raise KDConfigError(f"int8_act={args['int8_act']} is not supported: use int8_act=int8 or int8_act=uint8")
    if int8 and not data:
        raise KDConfigError("int8=True needs calibration images: add data=data.yaml (its train split is used)")
    fmt = check_export_requirements(fmt, int8=int8, evaluate=bool(data))
    if data:
        _check_data(data, args["split"], int8, fmt)

    from ultralytics import YOLO

    yolo = YOLO(str(model))
    if yolo.task != "detect":
        raise KDConfigError(f"model={model} is a '{yolo.task}' model: yolo-kd exports detection models only")
    stride = int(max(getattr(yolo.model, "stride", [32])))
    imgsz = grid_imgsz(args["imgsz"] or int(yolo.overrides.get("imgsz", 640) or 640), stride)
    calib = calibration_images(str(data), args["calib"]) if int8 and fmt == "onnx" else None  # fail before export
    device = args["device"] or ("0" if fmt == "engine" else "cpu")
    kwargs = {"format": ULTRALYTICS_FORMAT[fmt], "imgsz": imgsz, "batch": 1, "device": device,
              "simplify": args["simplify"]}
    if args["opset"]:
        kwargs["opset"] = args["opset"]
    if int8 and fmt != "onnx":
        kwargs.update(quantize=8, data=str(data), split=args["split"])

    folder = model.resolve().parent
    before = _snapshot(folder)
    title = FORMAT_TITLES[fmt]
    files = {"pytorch": str(model)}
    try:
        exported = yolo.export(**kwargs)
        if not exported or not Path(exported).exists():
            raise RuntimeError(f"Ultralytics {fmt} export produced no file")
        if int8 and fmt == "onnx":
            files["onnx_fp32"] = str(exported)
            files["onnx_int8"] = str(quantize_onnx_int8(exported, calib, activation=args["int8_act"]))
        else:
            files[f"{fmt}_{'int8' if int8 else 'fp32'}"] = str(exported)
    except BaseException:
        removed = _remove_new_entries(folder, before, model.stem, model.name)
        if removed:
            print(f"yolo-kd export: failed, removed partial output {', '.join(sorted(removed))} from {folder}")
        raise

    titles = {"pytorch": "PyTorch", f"{fmt}_fp32": f"{title} FP32", f"{fmt}_int8": f"{title} INT8"}
    complexity = model_complexity(model, imgsz)
    rows = {}
    for label, path in files.items():
        rows[label] = {"title": titles[label], "file": path, "size_mb": file_size_mb(path), **complexity,
                       "latency": measure_latency(path, imgsz, args["warmup"], args["runs"], device, args["threads"])
                       if args["runs"] else None}

    save_dir, parity = None, None
    if data:
        run_dir = make_run_dir(args["project"], args["name"], "runs/kd_export", "export", args["exist_ok"])
        save_dir = str(run_dir)
        evalset = load_eval_set(data, args["split"], work_dir=run_dir)
        (run_dir / "coco_gt.json").write_text(json.dumps(evalset.gt), encoding="utf-8")
        for label, path in files.items():
            val_args = dict(imgsz=imgsz, conf=args["conf"], iou=args["iou"], rect=False, device=device,
                            batch=args["batch"] if label == "pytorch" else None)
            rows[label].update(evaluate_checkpoint(path, evalset, run_dir / label, **val_args))
        reference = rows["pytorch"]["coco"]["mAP50-95"]
        for label in files:
            rows[label]["delta_points"] = 100.0 * (rows[label]["coco"]["mAP50-95"] - reference)
        fp32 = f"{fmt}_fp32"
        if fp32 in rows:
            delta = rows[fp32]["delta_points"]
            parity = {"model": fp32, "delta_points": delta, "target_points": PARITY_POINTS,
                      "met": abs(delta) <= PARITY_POINTS}
        (run_dir / "export_metrics.json").write_text(
            json.dumps({"format": fmt, "imgsz": imgsz, "models": rows, "parity": parity}, indent=2, default=str),
            encoding="utf-8")

    _print_report(fmt, files, rows, parity, save_dir, imgsz, data, model)
    return {"format": fmt, "imgsz": imgsz, "files": files, "models": rows, "parity": parity, "save_dir": save_dir}


def _print_report(fmt, files, rows, parity, save_dir, imgsz, data, model) -> None:
    print(f"\nyolo-kd export: format={fmt} imgsz={imgsz}, written beside the checkpoint:")
    width = max(len(r["title"]) for r in rows.values())
    for label, path in files.items():
        if label != "pytorch":
            print(f"  {rows[label]['title']:<{width}}  {path}")
    if save_dir:
        print(f"evaluation on data={data} saved to {save_dir}")
    headers = ["model", "size MB", "params", "GFLOPs", "latency ms (median)"]
    if data:
        headers += ["COCO mAP50-95", "COCO mAP50", "Ultralytics mAP50-95", "delta vs PyTorch (points)"]
    table = []
    for r in rows.values():
        latency = r["latency"]["median_ms"] if r["latency"] else None
        cells = [r["title"], f"{r['size_mb']:.2f}", f"{r['params']:,}", f"{r['gflops']:.2f}",
                 f"{latency:.2f}" if latency is not None else "-"]
        if data:
            cells += [r["coco"]["mAP50-95"], r["coco"]["mAP50"], r["ultralytics"]["mAP50-95"],
                      f"{r['delta_points']:+.2f}"]
        table.append(cells)
    print(format_table(headers, table))
    if data:
        print(RECT_NOTE.format(model=model, data=data))
    first = next(iter(rows.values()))
    if first["latency"]:
        print(f"latency: model call only (no letterbox/NMS), batch 1, {first['latency']['warmup']} warm-up + "
              f"{first['latency']['runs']} timed runs, device={'cpu' if fmt != 'engine' else 'cuda'}, "
              f"{first['latency']['threads']} threads; params/GFLOPs of the fused model at imgsz={imgsz}")
    if parity:
        verdict = "met" if parity["met"] else "NOT MET"
        print(f"parity {rows[parity['model']]['title']} vs PyTorch: {parity['delta_points']:+.2f} mAP50-95 points "
              f"(target |delta| <= {parity['target_points']}): {verdict}")
