"""The `yolo-kd` command, in Ultralytics' key=value style: ``yolo-kd train|val|export|label|demo|bench|data ...``.

Each subcommand is a thin layer over the Python API. User mistakes print one line and exit with status 2; Ctrl-C
prints one line (for train: where last.pt is and how to resume) and exits with status 130.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .errors import KDConfigError
from .offline import setup_offline
from .options import parse_tokens

USAGE = """\
yolo-kd: distil a large YOLO teacher into a small student inside the Ultralytics trainer

  yolo-kd train model=yolov8n.yaml teacher=teacher.pt data=data.yaml method=fgd epochs=100 imgsz=640
  yolo-kd train model=yolov8n.yaml data=data.yaml cfg=recipes/multi_teacher_stepwise.yaml epochs=100
  yolo-kd train resume=runs/kd/exp/weights/last.pt
  yolo-kd val model=teacher.pt,baseline.pt,distilled.pt data=data.yaml
  yolo-kd export model=best.pt format=onnx [int8=True] [data=data.yaml]
  yolo-kd label teacher=teacher.pt source=unlabeled/images [conf=0.25 iou=0.7 class_map={0: 0} out=...]
  yolo-kd demo [defect|agriculture] [profile=quick|full]
  yolo-kd bench data=... teacher=... model=... epochs=... seeds=1,2,3 methods=fgd,cskd,pred
  yolo-kd data steel|neon-trees|neu-det|gc10-det|plantdoc root=... [src=...]

Every Ultralytics train argument passes through. yolo-kd's own keys: teacher, method (e.g. fgd+pred), cfg (recipe
YAML), weights, layers, teacher_imgsz, schedule, auto_balance, class_map, unlabeled (images without labels),
unlabeled_ratio, unlabeled_bn, unlabeled_boxes, unlabeled_topk, unlabeled_weight, unlabeled_views, unlabeled_kd,
labeled_kd, teacher_guard.
Methods: pred, sl2, pkd, crosskd, fgd, cskd, cwd, mgd, mse.
`yolo-kd <command> help` lists a command's keys and defaults."""


def train_spec() -> dict:
    """yolo-kd's own train keys (`api.KD_OPTIONS`, checked by the recipe, which names the field and the fix) and the
    student; every other key is an Ultralytics train argument."""
    from .api import KD_OPTIONS
    from .options import as_str

    def keep(key, value):
        return value

    spec = {"model": (as_str, None, "the student: a model yaml, or a .pt to fine-tune (required unless resume=)")}
    return {**spec, **{k: (as_str if k in {"teacher", "method", "cfg"} else keep, None, text)
                       for k, text in KD_OPTIONS.items()}}


def train_command(overrides: dict) -> None:
    """`yolo-kd train`: distil with the drop-in engine; every non-KD key goes to Ultralytics' model.train."""
    from ultralytics import YOLO

    from .api import distill
    from .options import read_options
    from .ultra import train_arg_names

    kd, train = read_options("train", overrides, train_spec(), passthrough=train_arg_names() - {"model"})
    model_path = kd.pop("model")
    resume = train.get("resume")
    if isinstance(resume, str):
        model_path, train["resume"] = resume, True
    elif model_path is None:
        raise KDConfigError("no student given: add model=yolov8n.yaml (or a .pt to fine-tune)")
    model = YOLO(model_path)
    distill(model, **{k: v for k, v in kd.items() if v is not None})
    try:
        model.train(**train)
    except KeyboardInterrupt:
        raise KeyboardInterrupt(interrupted_message(getattr(model, "trainer", None))) from None


def interrupted_message(trainer) -> str:
    """What Ctrl-C during training leaves: the run's last.pt (saved at each epoch end) and the command to resume."""
    save_dir = getattr(trainer, "save_dir", None)
    if save_dir is None:
        return "interrupted before training started: no checkpoint was saved"
    last = Path(save_dir) / "weights" / "last.pt"
    if not last.is_file():
        return f"interrupted in the first epoch: no last.pt in {last.parent} yet; start the run again"
    return f"interrupted: the last finished epoch is saved in {last}; resume with: yolo-kd train resume={last}"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(USAGE)
        return 0
    command, tokens = argv[0], argv[1:]
    setup_offline()
    try:
        if tokens[:1] == ["help"]:
            print(command_help(command))
            return 0
        positional, overrides = parse_tokens(tokens)
        run(command, positional, overrides)
        return 0
    except KDConfigError as e:
        print(f"yolo-kd {command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print(f"yolo-kd {command}: {e.args[0] if e.args else 'interrupted'}", file=sys.stderr)
        return 130


def command_help(command: str) -> str:
    """`yolo-kd <command> help`: its usage and keys with defaults, in one shape for every command."""
    from .options import help_text

    if command == "train":
        return help_text("train", train_spec(), "yolo-kd train model=yolov8n.yaml teacher=t.pt data=d.yaml [key=value]",
                         "Every Ultralytics train argument (epochs, imgsz, batch, ...) passes through.")
    if command == "val":
        from .evaluation.validate import VAL_SPEC

        return help_text("val", VAL_SPEC, "yolo-kd val model=a.pt[,b.pt] data=d.yaml [key=value]")
    if command == "export":
        from .export.export import EXPORT_SPEC

        return help_text("export", EXPORT_SPEC, "yolo-kd export model=best.pt format=onnx [int8=True data=d.yaml]")
    if command == "label":
        from .label import LABEL_SPEC

        return help_text("label", LABEL_SPEC, "yolo-kd label teacher=t.pt source=images/ [key=value]",
                         "Labels land where Ultralytics looks for them (.../images/x.jpg -> .../labels/x.txt) unless "
                         "out= is given; an image without a confident box gets an empty file: a background image.")
    if command == "demo":
        from .demo import DEMO_SPEC

        return help_text("demo", DEMO_SPEC, "yolo-kd demo [defect|agriculture] [key=value]")
    if command == "bench":
        from .bench.command import BENCH_SPEC

        return help_text("bench", BENCH_SPEC, "yolo-kd bench data=... teacher=... [key=value]",
                         "Every other Ultralytics train argument applies to every run.")
    if command == "data":
        from .data.command import DATA_SPEC, DATASETS

        return help_text("data", DATA_SPEC, f"yolo-kd data {'|'.join(DATASETS)} [key=value]",
                         "Each data set takes the keys listed for it in `yolo-kd data` errors and the README.")
    raise KDConfigError(f"unknown command '{command}': use one of train, val, export, label, demo, bench, data")


def run(command: str, positional: list[str], overrides: dict) -> None:
    """Dispatch one subcommand; each is imported only when used."""
    if command == "train":
        train_command(overrides)
    elif command == "val":
        from .evaluation import val_command

        val_command(overrides)
    elif command == "export":
        from .export import export_command

        export_command(overrides)
    elif command == "label":
        from .label import label_command

        label_command(overrides)
    elif command == "demo":
        from .demo import demo_command

        demo_command(positional[0] if positional else "defect", overrides)
    elif command == "bench":
        from .bench import bench_command

        bench_command(overrides)
    elif command == "data":
        from .data import data_command

        if not positional:
            raise KDConfigError("say which dataset: yolo-kd data steel|neon-trees|neu-det|gc10-det|plantdoc ...")
        data_command({"dataset": positional[0], **overrides})
    else:
        raise KDConfigError(f"unknown command '{command}': use one of train, val, export, label, demo, bench, data")


if __name__ == "__main__":
    sys.exit(main())
