"""Make Ultralytics run air-gapped: no update checks, no font download, no hub weights.

Called by the commands and by `distill()` (a training run), never on import.
"""

import os
import shutil
from pathlib import Path


def setup_offline() -> None:
    """YOLO_OFFLINE=1 unless the user set it (it counts only before Ultralytics is first imported), and matplotlib's
    DejaVuSans placed as Ultralytics' Arial fonts so `check_font` never downloads."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    install_local_fonts()


def install_local_fonts() -> None:
    """Place matplotlib's DejaVuSans as Ultralytics' Arial fonts (a file each, written once)."""
    import matplotlib

    from .ultra import config_dir

    source = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    for name in ("Arial.ttf", "Arial.Unicode.ttf"):
        target = config_dir() / name
        if not target.exists() and source.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
