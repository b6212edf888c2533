"""Plain functions behind ``tools/analyze.py``: the paper's analyses (its section 5 and Tables 4-5).

Everything that touches the network goes through a *feature function*: a callable
``phi(x) -> F`` mapping a float32 batch ``x`` (N x 3 x S x S, already normalised the way
the data layer normalises its inputs) to the counting vectors ``F`` (N x dim, float64),
with attributes ``input_size`` (S) and ``dim``. ``CaffeFeatures`` is the real one (a
deploy net plus a .caffemodel); tests pass stubs with the same interface, so every
metric below is testable without a trained model.

Inputs are prepared with the data layer's own transforms (``count_transforms``):

* single-image analyses (Fig. 3, 4, 7, 8, the count check) feed one *view* per image:
  ``full`` = the whole image resized to S x S (default), or ``center`` = the central
  ``crop`` x ``crop`` region downsampled to S x S (exactly a test-time D(x));
* Table 5 feeds, per image, a seeded random ``crop`` x ``crop`` region x, its four tiles
  T1..T4 and D_j(x) for each downsampling method j, as the data layer does;
* every input is then put in the chosen colour mode and normalised on its own
  (``count_transforms.normalize_into``: (v - mean) / (std + eps)).

Images come from an LMDB of the project format (``lmdb_io``) or a folder of image files.
"""
import csv
import json
import math
import os
import re
from datetime import datetime

import cv2
import numpy as np


from ltc import transforms as ct
from ltc.params import CROP_SIZE, GRAY_PROB, SEED
from ltc.lmdb_io import IMAGE_EXTENSIONS as IMAGE_EXTS, LmdbError, datum_to_image, open_lmdb, resolve_path

METHODS = ct.INTERP_NAMES                      # ("linear", "cubic", "area", "lanczos")
TEST_METHODS = METHODS + ("mixed",)            # Table 5 columns
TRAIN_METHODS = METHODS + ("mixed",)           # Table 5 rows
VIEWS = ("full", "center")
COLOR_MODES = ("color", "gray")

# Table 5 as printed in the paper (rows: training method, columns: test method
# linear, cubic, area, lanczos, mixed; last: std). The text extraction lists the table
# column by column; read this way the std column is reproduced exactly by the sample std
# (ddof=1) of the four single-method columns (tests/test_analysis.py checks it).
PAPER_TABLE5 = {
    "linear": [0.33, 0.63, 0.33, 0.65, 0.48, 0.18],
    "cubic": [0.79, 0.25, 0.78, 0.22, 0.52, 0.32],
    "area": [0.32, 0.85, 0.31, 0.95, 0.50, 0.34],
    "lanczos": [1.023, 0.31, 1.02, 0.19, 0.58, 0.45],
    "mixed": [0.36, 0.29, 0.37, 0.30, 0.34, 0.04],
}


class AnalysisError(ValueError):
    """Bad input to an analysis (missing file, wrong shape, too few images, ...)."""


# ============================================================================ images
class ImageSet:
    """The images of an LMDB (project format) or of a folder of image files, in a fixed order.

    LMDB: key order; ``label`` = the Datum label. Folder: sorted relative paths of the files
    with an image extension, searched recursively; labels are None. ``max_images`` keeps the
    first N. ``load(i)`` -> (H x W x 3 uint8 BGR image, label).
    """

    def __init__(self, source, max_images=None, who="ImageSet"):
        self.source = resolve_path(source)
        self.who = who
        self.env = None
        if max_images is not None and max_images < 1:
            raise AnalysisError("%s: max_images must be >= 1, got %r" % (who, max_images))
        if os.path.isdir(self.source) and os.path.isfile(os.path.join(self.source, "data.mdb")):
            self.kind = "lmdb"
            self.env = open_lmdb(self.source, who)
            keys = []
            with self.env.begin() as txn:
                for k in txn.cursor().iternext(keys=True, values=False):
                    keys.append(bytes(k))
                    if max_images is not None and len(keys) >= max_images:
                        break
            self._keys = keys
            self.names = [k.decode("utf-8", "replace") for k in keys]
        elif os.path.isdir(self.source):
            self.kind = "folder"
            files = []
            for root, _, names in os.walk(self.source):
                for n in names:
                    if n.lower().endswith(IMAGE_EXTS):
                        files.append(os.path.relpath(os.path.join(root, n), self.source))
            files.sort()
            if not files:
                raise AnalysisError("%s: folder '%s' holds no image files (%s)" % (who, self.source, " ".join(IMAGE_EXTS)))
            self.names = files[:max_images] if max_images is not None else files
        else:
            raise AnalysisError("%s: '%s' is neither an LMDB folder (with data.mdb) nor a folder of images "
                                "(looked for %s)" % (who, source, self.source))

    def __len__(self):
        return len(self.names)

    def load(self, i):
        if self.kind == "lmdb":
            with self.env.begin(buffers=True) as txn:
                value = txn.get(self._keys[i])
                try:
                    img, label = datum_to_image(bytes(value))
                except LmdbError as e:
                    raise AnalysisError("%s: LMDB '%s', key %r: %s" % (self.who, self.source, self.names[i], e))
                except Exception as e:
                    raise AnalysisError("%s: LMDB '%s', key %r: not a Caffe Datum (%s)"
                                        % (self.who, self.source, self.names[i], e))
            return np.ascontiguousarray(img), int(label)
        path = os.path.join(self.source, self.names[i])
        img = cv2.imread(path, cv2.IMREAD_COLOR)
        if img is None:
            raise AnalysisError("%s: cannot read image file '%s'" % (self.who, path))
        return img, None

    def close(self):
        if self.env is not None:
            self.env.close()
            self.env = None


# ============================================================================ views and preprocessing
def hwc_to_chw(img):
    return np.ascontiguousarray(np.asarray(img).transpose(2, 0, 1))


def image_view(img, size, view="full", crop=CROP_SIZE, interp="area"):
    """One 3 x size x size uint8 input of an H x W x 3 image (see the module docstring)."""
    chw = hwc_to_chw(img)
    flag = ct.INTERP_FLAGS[interp]
    if view == "full":
        return ct.downsample_chw(chw, size, flag)
    if view == "center":
        h, w = chw.shape[1:]
        if h < crop or w < crop:
            raise AnalysisError("image is %dx%d, smaller than the %d center crop (use --view full)" % (h, w, crop))
        return ct.downsample_chw(ct.crop_chw(chw, (h - crop) // 2, (w - crop) // 2, crop), size, flag)
    raise AnalysisError("view must be one of %s, got %r" % (VIEWS, view))


def normalise_views(views, gray, eps=1e-5):
    """uint8 views (3 x S x S each) -> float32 K x 3 x S x S, colour mode + per-image normalisation."""
    s = views[0].shape[1]
    out = np.empty((len(views), 3, s, s), np.float32)
    ct.normalize_into(views, bool(gray), out, eps)
    return out


def crop_box(rng, height, width, lo=0.5, hi=0.95):
    """A random crop (y0, x0, h, w) whose area is a fraction in [lo, hi] of the image (Fig. 5-6).

    The fraction a is uniform in [lo, hi]; the crop keeps the image's aspect ratio (sides
    sqrt(a) H and sqrt(a) W, rounded, then nudged so h * w / (H * W) stays inside [lo, hi]);
    its position is uniform over the places where it fits.
    """
    if not 0 < lo <= hi <= 1:
        raise AnalysisError("crop area range must satisfy 0 < lo <= hi <= 1, got [%r, %r]" % (lo, hi))
    a = rng.uniform(lo, hi)
    h = min(height, max(1, int(round(math.sqrt(a) * height))))
    w = min(width, max(1, int(round(a * height * width / h))))
    total = float(height * width)
    while h * w / total > hi and w > 1:
        w -= 1
    while h * w / total < lo and w < width:
        w += 1
    while h * w / total < lo and h < height:
        h += 1
    y0 = int(rng.integers(0, height - h + 1))
    x0 = int(rng.integers(0, width - w + 1))
    return y0, x0, h, w


# ============================================================================ feature functions
class CaffeFeatures:
    """Counting vectors from a deploy net: ``phi(x)`` for a float32 N x 3 x S x S batch -> N x dim.

    deploy: prototxt with an Input blob ``input_blob`` (1 x 3 x S x S) and an output blob
    ``output_blob``; weights: .caffemodel (six-branch, stacked or deploy: layers are matched
    by name, the plain-named branch conv1..fc8 fills the deploy net). Every parameter of the
    deploy net must be filled by the file, else AnalysisError names the unfilled layers.
    The net is reshaped to ``batch`` inputs at a time.
    """

    def __init__(self, deploy, weights, batch=64, input_blob="data", output_blob="fc8", log=print):
        import caffe
        caffe.set_mode_cpu()
        deploy_path, weights_path = resolve_path(deploy), resolve_path(weights)
        if not os.path.isfile(deploy_path):
            raise AnalysisError("deploy prototxt '%s' does not exist (looked in %s)" % (deploy, deploy_path))
        if not os.path.isfile(weights_path):
            raise AnalysisError("weights '%s' do not exist (looked in %s); train a model first (README) or "
                                "pass --weights" % (weights, weights_path))
        net = caffe.Net(deploy_path, caffe.TEST)
        if input_blob not in net.blobs or output_blob not in net.blobs:
            raise AnalysisError("deploy '%s' must have blobs '%s' and '%s' (has %s)"
                                % (deploy_path, input_blob, output_blob, ", ".join(net.blobs.keys())))
        shape = net.blobs[input_blob].data.shape
        if len(shape) != 4 or shape[1] != 3 or shape[2] != shape[3]:
            raise AnalysisError("deploy '%s': input '%s' must be N x 3 x S x S, got %s" % (deploy_path, input_blob, shape))
        for blobs in net.params.values():
            for b in blobs:
                b.data[...] = np.nan
        net.copy_from(weights_path)
        unfilled = [name for name, blobs in net.params.items() if any(np.isnan(b.data).any() for b in blobs)]
        if unfilled:
            raise AnalysisError("weights '%s' do not fill layer(s) %s of deploy '%s' (layers are matched by name; "
                                "is this a counting model?)" % (weights_path, ", ".join(unfilled), deploy_path))
        if log:
            log("loaded %s into %s: %s" % (weights_path, deploy_path, ", ".join(
                "%s %s" % (n, "+".join("x".join(map(str, b.data.shape)) for b in bl)) for n, bl in net.params.items())))
        self.net, self.input_blob, self.output_blob = net, input_blob, output_blob
        self.input_size = int(shape[2])
        self.batch = int(batch)
        self._set_batch(self.batch)
        self.dim = int(np.prod(net.blobs[output_blob].data.shape[1:]))

    def _set_batch(self, n):
        s = self.input_size
        if self.net.blobs[self.input_blob].data.shape[0] != n:
            self.net.blobs[self.input_blob].reshape(n, 3, s, s)
            self.net.reshape()

    def __call__(self, x):
        x = np.asarray(x, np.float32)
        if x.ndim != 4 or x.shape[1:] != (3, self.input_size, self.input_size):
            raise AnalysisError("features want N x 3 x %d x %d inputs, got %s" % (self.input_size, self.input_size, x.shape))
        out = np.empty((len(x), self.dim), np.float64)
        for i in range(0, len(x), self.batch):
            chunk = x[i:i + self.batch]
            self._set_batch(len(chunk))
            self.net.blobs[self.input_blob].data[...] = chunk
            res = self.net.forward()[self.output_blob]
            out[i:i + len(chunk)] = np.asarray(res).reshape(len(chunk), -1)
        return out


def extract_features(phi, images, view="full", crop=CROP_SIZE, interp="area", color_mode="color", eps=1e-5,
                     chunk=64, progress=True, desc="features"):
    """Counting vectors of every image of ``images`` (ImageSet-like: len, load) -> (F n x dim, labels list)."""
    from tqdm import tqdm
    if color_mode not in COLOR_MODES:
        raise AnalysisError("color mode must be one of %s, got %r" % (COLOR_MODES, color_mode))
    n = len(images)
    feats = np.empty((n, phi.dim), np.float64)
    labels = []
    bar = tqdm(total=n, desc=desc, disable=not progress, unit="img")
    for start in range(0, n, chunk):
        idx = range(start, min(n, start + chunk))
        views = []
        for i in idx:
            img, label = images.load(i)
            labels.append(label)
            try:
                views.append(image_view(img, phi.input_size, view, crop, interp))
            except AnalysisError as e:
                raise AnalysisError("%s: %s" % (getattr(images, "names", ["#%d" % i] * n)[i], e))
        x = np.concatenate([normalise_views([v], color_mode == "gray", eps) for v in views])
        feats[start:start + len(views)] = phi(x)
        bar.update(len(views))
    bar.close()
    return feats, labels


# ============================================================================ metrics
def l2_norms(F):
    return np.sqrt(np.sum(np.asarray(F, np.float64) ** 2, axis=1))


def rank_by_norm(F, k):
    """Indices of the k largest-norm rows (descending) and the k smallest (ascending); ties by index."""
    norms = l2_norms(F)
    order = np.lexsort((np.arange(len(norms)), -norms))
    low = np.lexsort((np.arange(len(norms)), norms))
    k = min(k, len(norms))
    return order[:k], low[:k], norms


def nearest_neighbours(Q, D, k, exclude=None):
    """For each row of Q the k rows of D nearest in Euclidean distance (ascending; ties by index).

    exclude: optional sequence, exclude[q] = index into D to skip for query q (the query itself
    when Q's images are D's). Returns (indices q x k, distances q x k).
    """
    Q, D = np.asarray(Q, np.float64), np.asarray(D, np.float64)
    k = min(k, len(D) - (1 if exclude is not None else 0))
    idx = np.empty((len(Q), k), np.int64)
    out_d = np.empty((len(Q), k), np.float64)
    for q in range(len(Q)):
        dist = np.sqrt(((D - Q[q]) ** 2).sum(1))
        if exclude is not None and exclude[q] is not None and exclude[q] >= 0:
            dist[exclude[q]] = np.inf
        order = np.lexsort((np.arange(len(D)), dist))[:k]
        idx[q], out_d[q] = order, dist[order]
    return idx, out_d


def top_neurons(F, n):
    """The n neurons with the largest mean activation (descending; ties by index) and the means."""
    mean = np.asarray(F, np.float64).mean(0)
    order = np.lexsort((np.arange(len(mean)), -mean))
    return order[:n], mean


def top_images(F, neuron, k):
    """Indices of the k images that activate ``neuron`` most (descending; ties by index)."""
    a = np.asarray(F, np.float64)[:, neuron]
    return np.lexsort((np.arange(len(a)), -a))[:k]


def mean_vector_stats(F, threshold=0.01, rel=0.01):
    """Fig. 3: the mean counting vector and how many of its entries are active."""
    F = np.asarray(F, np.float64)
    mean = F.mean(0)
    mx = float(mean.max()) if len(mean) else 0.0
    return dict(mean=mean, std=F.std(0), frac_active=(F > 0).mean(0),
                n_dims=int(F.shape[1]), n_images=int(F.shape[0]),
                n_nonzero=int((mean > 0).sum()), threshold=float(threshold),
                n_above_threshold=int((mean > threshold).sum()),
                rel_threshold=float(rel), n_above_rel=int((mean > rel * mx).sum()) if mx > 0 else 0,
                max_mean=mx, mean_norm=float(l2_norms(F).mean()) if len(F) else 0.0)


def rankdata(x):
    """Ranks 1..n with ties given their average rank (as scipy.stats.rankdata 'average')."""
    x = np.asarray(x, np.float64)
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), np.float64)
    xs = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and xs[j + 1] == xs[i]:
            j += 1
        ranks[order[i:j + 1]] = 0.5 * (i + j) + 1.0
        i = j + 1
    return ranks


def spearman(x, y):
    """Spearman's rank correlation: Pearson's r of the (tie-averaged) ranks; nan if a side is constant."""
    rx, ry = rankdata(x), rankdata(y)
    if len(rx) != len(ry):
        raise AnalysisError("spearman: %d vs %d values" % (len(rx), len(ry)))
    rx, ry = rx - rx.mean(), ry - ry.mean()
    den = math.sqrt(float((rx ** 2).sum() * (ry ** 2).sum()))
    return float((rx * ry).sum() / den) if den > 0 else float("nan")


def bin_stats(x, y, edges):
    """Mean, std (population) and count of y for x in each bin [edges[b], edges[b+1]) (last bin closed)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    rows = []
    for b in range(len(edges) - 1):
        lo, hi = edges[b], edges[b + 1]
        sel = (x >= lo) & ((x < hi) if b < len(edges) - 2 else (x <= hi))
        v = y[sel]
        rows.append(dict(lo=float(lo), hi=float(hi), center=float(0.5 * (lo + hi)), count=int(sel.sum()),
                         mean=float(v.mean()) if len(v) else float("nan"),
                         std=float(v.std()) if len(v) else float("nan")))
    return rows


# ============================================================================ Table 5
def table5_inputs(img, idx, crop, seed, gray_prob, eps=1e-5, size=None):
    """The eight normalised inputs of image number ``idx`` for eq. 6 and its draws.

    x = a crop x crop region at a position drawn from rng(seed, idx) (the same for every
    model); inputs: T1..T4, then D_m(x) for m in METHODS order; colour mode gray with
    probability gray_prob (same draw for all eight); ``mixed`` = a method drawn per image.
    Returns (float32 8 x 3 x S x S, dict(gray, mixed)).
    """
    rng = np.random.default_rng([seed, idx])
    chw = hwc_to_chw(img)
    y0, x0 = ct.crop_offset(rng.random(2), chw.shape[1], chw.shape[2], crop)
    x = ct.crop_chw(chw, y0, x0, crop)
    s = size or crop // 2
    views = ct.tiles_chw(x) + [ct.downsample_chw(x, s, ct.INTERP_FLAGS[m]) for m in METHODS]
    gray = bool(rng.random() < gray_prob)
    mixed = int(rng.integers(len(METHODS)))
    return normalise_views(views, gray, eps), dict(gray=gray, mixed=mixed, y0=y0, x0=x0)


def table5(models, images, crop=CROP_SIZE, seed=SEED, gray_prob=GRAY_PROB, eps=1e-5, chunk=8, progress=True):
    """Eq. 6 for every (training method i, test method j).

    models: list of (train_method, phi) with train_method in TRAIN_METHODS; images: ImageSet-like.
    e_ij = sum_x |sum_p phi_i(T_p x) - phi_i(D_j x)|^2 / sum_x |phi_i(D_i x)|^2; for the
    ``mixed`` column D_j x uses the image's drawn method; for a ``mixed``-trained model the
    denominator uses |phi_i(D x)|^2 averaged over the four methods (decision: the paper gives
    no D_i for it). Returns dict(matrix (models x 5), std (sample std over the four
    single-method columns, ddof=1, as the paper's std column), numer, denom, the per-image
    terms err / dnorm (models x images x 4 methods) and the draws mixed, gray, offsets).
    """
    from tqdm import tqdm
    for m, phi in models:
        if m not in TRAIN_METHODS:
            raise AnalysisError("training method must be one of %s, got %r" % (", ".join(TRAIN_METHODS), m))
        if crop // 2 != phi.input_size:
            raise AnalysisError("crop %d gives %d x %d inputs but the net takes %d x %d"
                                % (crop, crop // 2, crop // 2, phi.input_size, phi.input_size))
    n, nm = len(images), len(METHODS)
    err = np.zeros((len(models), n, nm))     # |sum_p phi(T_p x) - phi(D_m x)|^2
    dn = np.zeros((len(models), n, nm))      # |phi(D_m x)|^2
    mixed = np.zeros(n, np.int64)
    gray = np.zeros(n, bool)
    offsets = np.zeros((n, 2), np.int64)
    bar = tqdm(total=n, desc="table5", unit="img", disable=not progress)
    for start in range(0, n, chunk):
        idx = list(range(start, min(n, start + chunk)))
        xs = []
        for i in idx:
            img, _ = images.load(i)
            if img.shape[0] < crop or img.shape[1] < crop:
                raise AnalysisError("%s: image is %dx%d, smaller than the %d crop"
                                    % (getattr(images, "names", ["#%d" % i] * n)[i], img.shape[0], img.shape[1], crop))
            x, info = table5_inputs(img, i, crop, seed, gray_prob, eps)
            xs.append(x)
            mixed[i], gray[i], offsets[i] = info["mixed"], info["gray"], (info["y0"], info["x0"])
        batch = np.concatenate(xs)
        for r, (_, phi) in enumerate(models):
            f = phi(batch).reshape(len(idx), 4 + nm, -1)
            tiles = f[:, :4].sum(1)
            d = f[:, 4:]
            err[r, idx] = ((tiles[:, None, :] - d) ** 2).sum(2)
            dn[r, idx] = (d ** 2).sum(2)
        bar.update(len(idx))
    bar.close()
    matrix = np.zeros((len(models), len(TEST_METHODS)))
    numer = np.zeros_like(matrix)
    denom = np.zeros(len(models))
    for r, (m, _) in enumerate(models):
        denom[r] = dn[r].mean(1).sum() if m == "mixed" else dn[r, :, METHODS.index(m)].sum()
        numer[r, :nm] = err[r].sum(0)
        numer[r, nm] = err[r, np.arange(n), mixed].sum()
        matrix[r] = numer[r] / denom[r] if denom[r] > 0 else np.nan
    std = matrix[:, :nm].std(1, ddof=1)
    return dict(matrix=matrix, std=std, numer=numer, denom=denom, err=err, dnorm=dn, mixed=mixed, gray=gray,
                offsets=offsets, n_images=n)


def format_table5(rows, matrix, std, title="train\\test"):
    head = "%-12s" % title + "".join("%9s" % c.capitalize() for c in TEST_METHODS) + "%9s" % "std"
    lines = [head]
    for name, vals, s in zip(rows, matrix, std):
        lines.append("%-12s" % name.capitalize() + "".join("%9.3f" % v for v in vals) + "%9.3f" % s)
    return "\n".join(lines)


# ============================================================================ Caffe log
_GLOG = re.compile(r"^[IWEF](\d{4}|\d{8}) (\d\d):(\d\d):(\d\d)\.(\d+)\s+\d+\s+\S+\]\s?(.*)$")
_ITER_LOSS = re.compile(r"Iteration (\d+)(?: \(([^)]*)\))?, loss = ([-+\w.]+)")
_LR = re.compile(r"Iteration (\d+), lr = ([-+\w.]+)")
_TESTING = re.compile(r"Iteration (\d+), Testing net \(#(\d+)\)")
_OUTPUT = re.compile(r"(Train|Test) net output #(\d+): (\S+) = ([-+\w.]+)")


def _glog_seconds(m):
    """Seconds of a glog timestamp (IYYYYMMDD or IMMDD; a missing year counts as 2000)."""
    date = m.group(1)
    year = int(date[:4]) if len(date) == 8 else 2000
    t = datetime(year, int(date[-4:-2]), int(date[-2:]), int(m.group(2)), int(m.group(3)), int(m.group(4)))
    return (t - datetime(1970, 1, 1)).total_seconds() + float("0." + m.group(5))


def parse_caffe_log(text):
    """Caffe's glog training log -> dict(train=[rows], test=[rows], lr=[(iter, lr)]).

    train rows: iteration, seconds (since the log's first timestamp), loss (the displayed,
    smoothed loss), lr (from the "Iteration N, lr = ..." line of the same iteration, None
    for the final "Iteration N, loss" line, which has none), and one key per
    "Train net output #k: name = value" (``train_<name>``). test rows: iteration, seconds,
    net (test net number), and ``test_<name>`` per "Test net output". Lines without a glog
    prefix are parsed too (seconds = None).
    """
    train, test, lrs = [], [], []
    t0 = None
    cur_train, cur_test = None, None
    day_fix, last_t = 0.0, None
    for raw in text.splitlines():
        m = _GLOG.match(raw)
        if m:
            t = _glog_seconds(m)
            if last_t is not None and t + day_fix < last_t - 43200:   # year-less log crossed new year
                day_fix += 366 * 86400.0
            t += day_fix
            last_t = t
            if t0 is None:
                t0 = t
            secs, msg = t - t0, m.group(6)
        else:
            secs, msg = None, raw
        mm = _LR.search(msg)
        if mm:
            lr = float(mm.group(2))
            lrs.append((int(mm.group(1)), lr))
            if cur_train is not None and cur_train["iteration"] == int(mm.group(1)):
                cur_train["lr"] = lr
            continue
        mm = _TESTING.search(msg)
        if mm:
            cur_test = dict(iteration=int(mm.group(1)), seconds=secs, net=int(mm.group(2)))
            test.append(cur_test)
            continue
        mm = _ITER_LOSS.search(msg)
        if mm:
            cur_train = dict(iteration=int(mm.group(1)), seconds=secs, loss=float(mm.group(3)), lr=None)
            train.append(cur_train)
            continue
        mm = _OUTPUT.search(msg)
        if mm:
            row = cur_train if mm.group(1) == "Train" else cur_test
            if row is not None:
                row["%s_%s" % (mm.group(1).lower(), mm.group(3))] = float(mm.group(4))
    return dict(train=train, test=test, lr=lrs)


# ============================================================================ output helpers
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
