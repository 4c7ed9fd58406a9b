"""Demo datasets: a procedural steel-defect generator, NEON tree crowns from the deepforest wheel, and converters
from NEU-DET, GC10-DET and PlantDoc (Pascal VOC XML) to the Ultralytics YOLO layout."""

from .steel import STEEL_NAMES, make_steel_dataset

__all__ = ["STEEL_NAMES", "make_steel_dataset"]
