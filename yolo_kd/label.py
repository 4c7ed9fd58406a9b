"""`yolo-kd label`: YOLO label files for a set of images from a teacher's predictions (pseudo-labels).

    yolo-kd label teacher=best.pt source=unlabeled/images [conf=0.25 iou=0.7 imgsz= batch=8 device= max_det=300
                  class_map={0: 1} out= empty=write|skip overwrite=False]

The teacher predicts through Ultralytics' own predictor: its letterbox at `imgsz`, NMS at `iou`, boxes scaled back
to the original image and clipped to it. Each box is written as `class x y w h` normalised by the ORIGINAL width and
height, so the labels are right for any image shape. Labels go where Ultralytics looks for them (`.../images/x.jpg`
-> `.../labels/x.txt`), or to `out=`. Every user mistake (no images, an existing label file without
`overwrite=True`, a bad class_map) is refused before a single file is written.
"""

from __future__ import annotations

import glob
import os
import tempfile
from collections import Counter
from pathlib import Path

from .errors import KDConfigError
from .files import list_image_files
from .options import as_bool, as_float, as_int, as_str, optional, read_options
from .ultra import image_formats, label_paths, predict_stream, progress

#: Pseudo-label threshold (Ultralytics' predict default too). In a label file a false box is trained as an object and
#: a dropped one as background; on the label-scarce bench 0.25 scored above 0.5 on agriculture (+3.76 against +2.63
#: points over the baseline, 3 seeds) and level with it on defect, and 0.5 left a weak teacher's pool too empty.
DEFAULT_CONF = 0.25

def as_mapping(key: str, value) -> dict:
    """A non-empty {class id: class id} mapping."""
    if not isinstance(value, dict) or not value:
        raise KDConfigError(f"{key}={value!r} must be a mapping, e.g. {key}={{0: 0, 2: 1}} "
                            "(teacher class: dataset class)")
    try:
        return {int(k): int(v) for k, v in value.items()}
    except (TypeError, ValueError):
        raise KDConfigError(f"{key}={value!r} must map class ids to class ids, e.g. {key}={{0: 0, 2: 1}}") from None


LABEL_SPEC = {
    "teacher": (as_str, ..., "the teacher checkpoint (.pt) whose predictions become the labels"),
    "source": (as_str, ..., "images to label: a folder, a .txt list of image paths, or a glob ('imgs/*.jpg')"),
    "conf": (as_float, DEFAULT_CONF, "keep boxes scored above this (a false box is trained as an object, a missed "
                                     "one as background; 0.25 beat 0.5 on the label-scarce bench)"),
    "iou": (as_float, 0.7, "NMS IoU threshold (Ultralytics' default)"),
    "imgsz": (optional(as_int), None, "prediction size (default: the teacher's training size)"),
    "batch": (as_int, 8, "images per forward pass"),
    "device": (as_str, None, "cpu, 0, 0,1 ... (default: Ultralytics' choice)"),
    "max_det": (as_int, 300, "most boxes kept per image"),
    "class_map": (as_mapping, None, "{teacher class id: dataset class id}; boxes of other teacher classes are dropped"),
    "out": (as_str, None, "write all labels into this folder as <image stem>.txt (default: images/ -> labels/, "
                          "where Ultralytics looks)"),
    "empty": (as_str, "write", "write: an image without a confident box gets an empty label file, which "
                               "Ultralytics trains as a background image; skip: write none (Ultralytics still "
                               "trains an image of a split without a label file as background)"),
    "overwrite": (as_bool, False, "replace existing label files (refused otherwise, before anything is written)"),
}


def find_images(source: str | Path) -> list[str]:
    """The images of `source` (a folder, searched recursively; a .txt list; a glob; or one image), sorted;
    KDConfigError when it does not exist or holds no image."""
    text = str(source)
    if any(c in text for c in "*?["):
        formats = image_formats()
        images = sorted(p for p in glob.glob(text, recursive=True)
                        if os.path.isfile(p) and p.rpartition(".")[-1].lower() in formats)
    elif not Path(text).exists():
        raise KDConfigError(f"source={text} does not exist: pass a folder, a .txt list or a glob of images")
    elif Path(text).is_file() and text.rpartition(".")[-1].lower() in image_formats():
        images = [text]
    else:
        try:
            images = list_image_files(text)
        except KDConfigError:
            images = []
    if not images:
        raise KDConfigError(f"source={text} holds no images: pass a folder, a .txt list or a glob of image files "
                            f"({', '.join(sorted(image_formats())[:6])}, ...)")
    return images


def check_class_map(mapping: dict[int, int] | None, teacher_names: dict) -> None:
    """Every key of {teacher class id: dataset class id} must be a class of the teacher, every value >= 0."""
    if mapping is None:
        return
    unknown = sorted(set(mapping) - set(teacher_names))
    if unknown or min(mapping.values()) < 0:
        raise KDConfigError(f"class_map={mapping} does not fit teacher classes {dict(teacher_names)}: map teacher "
                            f"class ids (not {unknown}) to dataset class ids >= 0")


def label_targets(images: list[str], out: str | None) -> list[Path]:
    """Where each image's label file goes: Ultralytics' images/ -> labels/ rule, or out/<stem>.txt."""
    if out is None:
        return [Path(p) for p in label_paths(images)]
    stems = Counter(Path(p).stem for p in images)
    clash = [s for s, n in stems.items() if n > 1]
    if clash:
        raise KDConfigError(f"{len(clash)} image names occur twice in source (e.g. '{clash[0]}'), so out= would "
                            "write one label over another: drop out= to write each label beside its image folder")
    return [Path(out) / f"{Path(p).stem}.txt" for p in images]


def result_boxes(result, class_map: dict[int, int] | None, keep=None) -> list[tuple[int, float, float, float, float,
                                                                                  float]]:
    """(class, x, y, w, h, score) of one Ultralytics Result: boxes clipped to the original image and normalised by its
    width and height; classes mapped through `class_map` (boxes of unmapped classes dropped); only the boxes where
    the boolean sequence `keep` is true, when given."""
    h, w = result.orig_shape
    boxes = result.boxes
    xyxy = boxes.xyxy.cpu().double()
    xyxy[:, 0::2] = xyxy[:, 0::2].clamp(0, w)
    xyxy[:, 1::2] = xyxy[:, 1::2].clamp(0, h)
    keep = [True] * len(xyxy) if keep is None else list(keep)
    rows = []
    for (x1, y1, x2, y2), c, score, kept in zip(xyxy.tolist(), boxes.cls.int().tolist(), boxes.conf.tolist(), keep):
        if not kept or (class_map is not None and c not in class_map):
            continue
        if x2 <= x1 or y2 <= y1:
            continue
        rows.append((class_map[c] if class_map is not None else c, (x1 + x2) / 2 / w, (y1 + y2) / 2 / h,
                     (x2 - x1) / w, (y2 - y1) / h, score))
    return rows


def label_lines(result, class_map: dict[int, int] | None) -> list[str]:
    """'class x y w h' lines of one Ultralytics Result (`result_boxes`, six decimals)."""
    return [f"{c} {x:.6f} {y:.6f} {w:.6f} {h:.6f}" for c, x, y, w, h, _ in result_boxes(result, class_map)]


def predictions(model, images: list[str], predict: dict):
    """The model's Results for `images`, streamed from disk the way Ultralytics reads a .txt source (its loader and
    cv2 decoding, as in training); a Python list would make Ultralytics open every image in memory first. `model`: a
    YOLO object, or a detection nn.Module in memory (a student's EMA), run by Ultralytics' predictor on a copy (the
    predictor fuses what it runs)."""
    with tempfile.TemporaryDirectory() as folder:
        listing = Path(folder) / "images.txt"
        listing.write_text("".join(f"{p}\n" for p in images))
        yield from predict_stream(model, str(listing), predict)


def label_images(teacher, source, **options) -> dict:
    """Write one YOLO label file per image of `source` from `teacher`'s predictions (see the module docstring).

    Options as `yolo-kd label help` lists them (conf, iou, imgsz, batch, device, max_det, class_map, out, empty,
    overwrite). Returns {"images" (labelled), "unreadable" (images Ultralytics could not decode: no file written),
    "boxes", "empty" (images without a box), "labels" (files written), "written_to" (folder), "classes"
    ({class id: boxes})}. Raises KDConfigError, with nothing written, on bad input.
    """
    return label(read_options("label", {"teacher": teacher, "source": source, **options}, LABEL_SPEC))


def label_command(overrides: dict) -> dict:
    """`yolo-kd label`: label the images and print the one-line summary."""
    summary = label(read_options("label", overrides, LABEL_SPEC))
    print(summary_line(summary))
    return summary


def label(o: dict) -> dict:
    """Every check first, then the predictions, one label file written per image as it comes."""
    from .evaluation.predict import load_detector

    if o["empty"] not in {"write", "skip"}:
        raise KDConfigError(f"empty={o['empty']} is unknown: use empty=write (background label files) or empty=skip")
    if not Path(o["teacher"]).is_file():
        raise KDConfigError(f"teacher={o['teacher']} does not exist: pass a trained detection checkpoint (best.pt)")
    images = find_images(o["source"])
    targets = label_targets(images, o["out"])
    if Path(o["source"]).resolve() in {t.resolve() for t in targets}:
        raise KDConfigError(f"source={o['source']} is also the label file of an image beside it: move the list, "
                            "or pass out=<folder>")
    existing = [t for t in targets if t.exists()]
    if existing and not o["overwrite"]:
        raise KDConfigError(f"{len(existing)} of {len(targets)} label files already exist (e.g. {existing[0]}): "
                            "pass overwrite=True to replace them, or out=<folder> to write elsewhere")
    model = load_detector(o["teacher"])
    check_class_map(o["class_map"], model.names)

    predict = {k: o[k] for k in ("conf", "iou", "max_det", "batch", "imgsz", "device") if o[k] is not None}
    target_of = {str(Path(p).absolute()): t for p, t in zip(images, targets)}  # Ultralytics skips unreadable images
    classes: Counter = Counter()
    n_empty = written = seen = 0
    for result in progress(predictions(model, list(target_of), predict), total=len(images), desc="yolo-kd label"):
        target, seen = target_of[result.path], seen + 1
        lines = label_lines(result, o["class_map"])
        classes.update(int(line.split()[0]) for line in lines)
        n_empty += not lines
        if lines or o["empty"] == "write":
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text("".join(f"{line}\n" for line in lines))
            written += 1
        elif target.exists():
            target.unlink()  # (overwrite=True) a stale label would claim objects the teacher does not see
    folder = o["out"] or os.path.commonpath([str(t.parent) for t in targets])
    return {"images": seen, "unreadable": len(images) - seen, "boxes": sum(classes.values()), "empty": n_empty,
            "labels": written, "written_to": str(folder), "classes": dict(sorted(classes.items()))}


def summary_line(s: dict) -> str:
    """'yolo-kd label: 120 images, 431 boxes, 7 empty (background), 120 label files written to datasets/x/labels'."""
    unreadable = f" ({s['unreadable']} unreadable, skipped)" if s["unreadable"] else ""
    return (f"yolo-kd label: {s['images']} images{unreadable}, {s['boxes']} boxes, {s['empty']} without a box "
            f"(background), {s['labels']} label files written to {s['written_to']}")
