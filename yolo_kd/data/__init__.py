"""Demo datasets in the Ultralytics YOLO layout (images/{train,val}, labels/{train,val}, data.yaml).

* :func:`make_steel_dataset`: procedural steel-surface defects with NEU-DET's six classes (no download);
* :func:`prepare_neon_trees`: real NEON aerial tree crowns from the deepforest wheel on PyPI, tiled;
* :func:`convert_neu_det`, :func:`convert_gc10_det`, :func:`convert_plantdoc`: Pascal VOC datasets a user has;
* :func:`data_command`: the `yolo-kd data <dataset> key=value ...` command.

Importing this package is cheap; each function imports its own heavy dependencies.
"""

from .command import DATASETS, data_command
from .gc10 import GC10_NAMES, convert_gc10_det
from .neon import NEON_VAL_IMAGES, prepare_neon_trees
from .neu import NEU_NAMES, convert_neu_det
from .plantdoc import convert_plantdoc
from .steel import STEEL_NAMES, make_steel_dataset
from .voc import VocAnnotation, VocObject, parse_voc_xml

__all__ = ["DATASETS", "GC10_NAMES", "NEON_VAL_IMAGES", "NEU_NAMES", "STEEL_NAMES", "VocAnnotation", "VocObject",
           "convert_gc10_det", "convert_neu_det", "convert_plantdoc", "data_command", "make_steel_dataset",
           "parse_voc_xml", "prepare_neon_trees"]
