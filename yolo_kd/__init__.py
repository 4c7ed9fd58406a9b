"""yolo-kd: detection-specific knowledge distillation inside the Ultralytics trainer.

Drop-in::

    from ultralytics import YOLO
    import yolo_kd

    model = YOLO("yolov8n.yaml")
    yolo_kd.distill(model, teacher="teacher.pt")   # the default recipe; method="fgd+pred" etc. to choose
    model.train(data="data.yaml", epochs=100)

or as Ultralytics callbacks, on any trainer (the stock one, a subclass of your own)::

    yolo_kd.add_callbacks(model, teacher="teacher.pt")    # or model.add_callback(event, fn) for yolo_kd.callbacks(...)
    model.train(data="data.yaml", epochs=100, trainer=MyTrainer)

Importing the package imports nothing heavy and changes nothing: the names below are handed on from their modules
when first used (so `from yolo_kd.losses import FGDLoss` needs neither the trainer nor Ultralytics).
"""

__version__ = "0.1.0"

_NAMES = {"distill": "api", "callbacks": "api", "add_callbacks": "api", "KDConfigError": "errors",
          "KDTrainer": "trainer", "trainer_for": "trainer", "Recipe": "recipe", "METHODS": "methods",
          "register": "methods", "label_images": "label"}

__all__ = [*_NAMES, "__version__"]


def __getattr__(name):
    if name in _NAMES:
        import importlib

        return getattr(importlib.import_module(f".{_NAMES[name]}", __name__), name)
    raise AttributeError(f"module 'yolo_kd' has no attribute {name!r}")
