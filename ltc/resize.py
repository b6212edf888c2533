"""Bilinear resize as two interpolation matrices (numpy core of python_layers/resize_layer.py).

``top[n, c] = Ry @ bottom[n, c] @ Rx.T`` (Ry: out_h x in_h, Rx: out_w x in_w); the backward
pass is the exact transpose. align_corners=True maps corner pixels onto each other (DeepLab's
Interp layer); False is OpenCV's INTER_LINEAR convention.
"""
import numpy as np

def interp_matrix(out_size, in_size, align_corners=True):
    """out_size x in_size float64 matrix R with R @ v = v bilinearly resampled to out_size."""
    if out_size < 1 or in_size < 1:
        raise ValueError("interp_matrix: sizes must be >= 1, got out=%d in=%d" % (out_size, in_size))
    i = np.arange(out_size, dtype=np.float64)
    if align_corners:
        src = i * ((in_size - 1) / (out_size - 1)) if out_size > 1 else np.zeros(1)
    else:
        src = np.clip((i + 0.5) * (in_size / out_size) - 0.5, 0, in_size - 1)
    lo = np.minimum(np.floor(src).astype(int), in_size - 1)
    hi = np.minimum(lo + 1, in_size - 1)
    frac = src - lo
    r = np.zeros((out_size, in_size))
    np.add.at(r, (np.arange(out_size), lo), 1 - frac)
    np.add.at(r, (np.arange(out_size), hi), frac)
    return r


def resize_forward(x, ry, rx):
    """N x C x H x W -> N x C x out_h x out_w with the interpolation matrices ry, rx."""
    return np.matmul(np.matmul(ry, x), rx.T)


def resize_backward(g, ry, rx):
    """Gradient of resize_forward w.r.t. its input, for top gradient g."""
    return np.matmul(np.matmul(ry.T, g), rx)
