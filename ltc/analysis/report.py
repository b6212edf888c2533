"""Output helpers of the analyses: CSV and JSON files, timestamps (the figures: ltc/analysis/plots.py)."""
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


def now():
    return datetime.now().strftime("%Y-%m-%d %H:%M:%S")
