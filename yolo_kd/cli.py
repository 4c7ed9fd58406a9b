"""The `yolo-kd` command, in Ultralytics' key=value style: ``yolo-kd train|val|export|demo|bench|data ...``.

Each subcommand is a thin layer over the Python API. User mistakes print one line and exit with status 2.
"""

from __future__ import annotations

import sys

import yaml

from .errors import KDConfigError

USAGE = """\
yolo-kd: distil a large YOLO teacher into a small student inside the Ultralytics trainer

  yolo-kd train model=yolov8n.yaml teacher=teacher.pt data=data.yaml method=fgd epochs=100 imgsz=640
  yolo-kd train model=yolov8n.yaml data=data.yaml cfg=recipes/multi_teacher_stepwise.yaml epochs=100
  yolo-kd train resume=runs/kd/exp/weights/last.pt
  yolo-kd val model=teacher.pt,baseline.pt,distilled.pt data=data.yaml
  yolo-kd export model=best.pt format=onnx [int8=True] [data=data.yaml]
  yolo-kd demo [defect|agriculture] [profile=quick|full]
  yolo-kd bench data=... teacher=... model=... epochs=... seeds=1,2,3 methods=fgd,cskd,pred
  yolo-kd data steel|neon-trees|neu-det|gc10-det|plantdoc root=... [src=...]

Every Ultralytics train argument passes through. yolo-kd's own keys: teacher, method (e.g. fgd+pred), cfg (recipe
YAML), weights, layers, teacher_imgsz, schedule, auto_balance, class_map. Methods: mse, fgd, cskd, pred, cwd, mgd."""


def parse_overrides(tokens: list[str]) -> tuple[list[str], dict]:
    """Split ['defect', 'epochs=3', 'layers={student: [1]}'] into positionals and a dict of typed values."""
    from ultralytics.cfg import smart_value

    positional, overrides = [], {}
    for token in tokens:
        if "=" not in token:
            positional.append(token)
            continue
        key, value = token.split("=", 1)
        if not key or not value:
            raise KDConfigError(f"'{token}' is not key=value: write e.g. epochs=10 (no spaces around '=')")
        if value[0] in "{[":
            try:
                overrides[key] = yaml.safe_load(value)
            except yaml.YAMLError as e:
                raise KDConfigError(f"value of '{key}' is not valid YAML: {value}") from e
        else:
            overrides[key] = smart_value(value)
    return positional, overrides


def train_command(overrides: dict) -> None:
    """`yolo-kd train`: distil with the drop-in engine; every non-KD key goes to Ultralytics' model.train."""
    from ultralytics import YOLO
    from ultralytics.utils import DEFAULT_CFG_KEYS

    from .api import KD_KEYS, distill

    unknown = sorted(k for k in overrides if k not in KD_KEYS and k not in DEFAULT_CFG_KEYS)
    if unknown:
        raise KDConfigError(f"unknown argument(s) {unknown}: use Ultralytics train arguments or {list(KD_KEYS)}")
    kd = {k: overrides.pop(k) for k in KD_KEYS if k in overrides}
    resume = overrides.get("resume")
    if isinstance(resume, str):
        model_path, overrides["resume"] = resume, True
    else:
        model_path = overrides.pop("model", None)
        if model_path is None:
            raise KDConfigError("no student given: add model=yolov8n.yaml (or a .pt to fine-tune)")
    model = YOLO(model_path)
    distill(model, **kd)
    model.train(**overrides)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(USAGE)
        return 0
    command, tokens = argv[0], argv[1:]
    try:
        positional, overrides = parse_overrides(tokens)
        run(command, positional, overrides)
        return 0
    except KDConfigError as e:
        print(f"yolo-kd {command}: error: {e}", file=sys.stderr)
        return 2


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
        raise KDConfigError(f"unknown command '{command}': use one of train, val, export, demo, bench, data")


if __name__ == "__main__":
    sys.exit(main())
