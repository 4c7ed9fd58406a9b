"""Make Ultralytics run air-gapped: no update checks, no font download, no hub weights."""

import os
import shutil
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")


def install_local_fonts() -> None:
    """Place matplotlib's DejaVuSans as Ultralytics' Arial fonts so `check_font` never downloads."""
    import matplotlib
    from ultralytics.utils import USER_CONFIG_DIR

    source = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    for name in ("Arial.ttf", "Arial.Unicode.ttf"):
        target = Path(USER_CONFIG_DIR) / name
        if not target.exists() and source.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
