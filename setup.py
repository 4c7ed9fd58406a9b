"""yolo-kd: detection-specific knowledge distillation for Ultralytics YOLO."""

from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="yolo-kd",
    version="0.1.0",
    description="Distil a frozen large YOLO teacher into a small YOLO student inside the Ultralytics trainer",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=find_packages(include=["yolo_kd", "yolo_kd.*"]),
    install_requires=[
        "ultralytics>=8.4.190,<8.5",  # engine hooks tested on 8.4.190; 8.4.x internals moved between patches
        "torch>=2.0",
        "opencv-python>=4.6",
        "pycocotools>=2.0.7",
        "albumentations>=2.0",  # seeded Compose and GaussNoise(std_range) in the steel generator
        "numpy>=1.23",
        "matplotlib>=3.6",
        "pyyaml>=6.0",
    ],
    extras_require={
        "export": ["onnx>=1.15", "onnxruntime>=1.17", "onnxslim>=0.1.71"],
        "ddp": ["cloudpickle>=3.1.1"],
        "test": ["pytest>=7", "pytest-xdist>=3", "cloudpickle>=3.1.1"],  # -n: every core; the DDP launch-file test
    },
    entry_points={"console_scripts": ["yolo-kd=yolo_kd.cli:main"]},
)
