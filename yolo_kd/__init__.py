"""yolo-kd: detection-specific knowledge distillation inside the Ultralytics trainer.

Drop-in::

    from ultralytics import YOLO
    import yolo_kd

    model = YOLO("yolov8n.yaml")
    yolo_kd.distill(model, teacher="teacher.pt", method="fgd+pred")
    model.train(data="data.yaml", epochs=100)
"""

from . import offline  # noqa: F401  (sets YOLO_OFFLINE before Ultralytics is imported)

__version__ = "0.1.0"

from .api import distill  # noqa: E402
from .errors import KDConfigError  # noqa: E402
from .methods import METHODS, register  # noqa: E402
from .recipe import Recipe  # noqa: E402
from .trainer import KDTrainer, trainer_for  # noqa: E402

offline.install_local_fonts()

__all__ = ["distill", "KDConfigError", "KDTrainer", "trainer_for", "Recipe", "METHODS", "register", "__version__"]
