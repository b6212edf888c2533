"""Output helpers of the analyses: CSV and JSON files, image grids (matplotlib), timestamps."""
import csv
import json
import math
from datetime import datetime

import numpy as np

def write_csv(path, rows, fields=None):
    fields = fields or sorted({k for r in rows for k in r}, key=lambda k: (k not in ("iteration", "index", "key"), k))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in fields})
    return path


def _jsonable(v):
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.ndarray):
        return _jsonable(v.tolist())
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating, float)):
        v = float(v)
        return v if math.isfinite(v) else None
    if isinstance(v, (np.bool_,)):
        return bool(v)
    return v


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(_jsonable(obj), f, indent=2, sort_keys=True)
        f.write("\n")
    return path


def rgb(img):
    """BGR uint8 image -> RGB for matplotlib."""
    return np.ascontiguousarray(np.asarray(img)[:, :, ::-1])


def image_grid(path, images, captions=None, ncols=4, title=None, cell=2.0, border=None, row_labels=None):
    """Save a grid of BGR images (None = empty cell) with optional captions and coloured borders."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    n = len(images)
    nrows = max(1, -(-n // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(cell * ncols, cell * nrows + (0.5 if title else 0)), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if k >= n or images[k] is None:
            ax.axis("off")
            continue
        ax.imshow(rgb(images[k]), interpolation="bilinear")
        if captions is not None and captions[k]:
            ax.set_title(captions[k], fontsize=7)
        color = border[k] if border is not None else None
        for sp in ax.spines.values():
            sp.set_visible(color is not None)
            if color is not None:
                sp.set_edgecolor(color)
                sp.set_linewidth(3)
        if row_labels is not None and k % ncols == 0 and row_labels[k // ncols]:
            ax.set_ylabel(row_labels[k // ncols], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / (cell * nrows + 0.5)) if title else None)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def now():
    return datetime.now().strftime("%Y-%m-%d %H:%M:%S")
