"""Plain-Python / NumPy float64 references shared by the loss tests (no torch ops in the math)."""

import math

import numpy as np


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def softmax(values: list[float]) -> list[float]:
    top = max(values)
    exps = [math.exp(v - top) for v in values]
    return [e / sum(exps) for e in exps]


def conv_weights(conv) -> tuple[np.ndarray, np.ndarray]:
    return conv.weight.detach().double().numpy(), conv.bias.detach().double().numpy()


def conv1x1(x: np.ndarray, conv) -> np.ndarray:
    """A 1x1 conv of a torch module applied to x (N, C, H, W) in float64."""
    w, b = conv_weights(conv)
    return np.einsum("oc,nchw->nohw", w[:, :, 0, 0], x) + b[None, :, None, None]


def conv3x3(x: np.ndarray, conv) -> np.ndarray:
    """Zero-padded 3x3 cross-correlation of a torch module, one kernel offset at a time."""
    w, b = conv_weights(conv)
    n, _, h, wd = x.shape
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    out = np.zeros((n, w.shape[0], h, wd)) + b[None, :, None, None]
    for dy in range(3):
        for dx in range(3):
            out += np.einsum("oc,nchw->nohw", w[:, :, dy, dx], padded[:, :, dy:dy + h, dx:dx + wd])
    return out
