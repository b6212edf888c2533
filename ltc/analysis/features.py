"""Plain functions behind ``tools/analyze.py``: the paper's analyses (its section 5 and Tables 4-5).

Everything that touches the network goes through a *feature function*: a callable
``phi(x) -> F`` mapping a float32 batch ``x`` (N x 3 x S x S, already normalised the way
the data layer normalises its inputs) to the counting vectors ``F`` (N x dim, float64),
with attributes ``input_size`` (S) and ``dim``. ``CaffeFeatures`` is the real one (a
deploy net plus a .caffemodel); tests pass stubs with the same interface, so every
metric below is testable without a trained model.

Inputs are prepared with the data layer's own transforms (``ltc.transforms``):

* single-image analyses (Fig. 3, 4, 7, 8, the count check) feed one *view* per image:
  ``full`` = the whole image resized to S x S (default), or ``center`` = the central
  ``crop`` x ``crop`` region downsampled to S x S (exactly a test-time D(x));
* Table 5 feeds, per image, a seeded random ``crop`` x ``crop`` region x, its four tiles
  T1..T4 and D_j(x) for each downsampling method j, as the data layer does;
* every input is then put in the chosen colour mode and normalised on its own
  (``ltc.transforms.normalize_into``: (v - mean) / (std + eps)).

Images come from an LMDB of the project format (``lmdb_io``) or a folder of image files.
"""
import math
import os

import cv2
import numpy as np


from ltc import transforms
from ltc.params import CROP_SIZE, EPS
from ltc.lmdb_io import IMAGE_EXTENSIONS as IMAGE_EXTS, LmdbError, datum_to_image, open_lmdb, resolve_path

METHODS = transforms.INTERP_NAMES                      # ("linear", "cubic", "area", "lanczos")
TEST_METHODS = METHODS + ("mixed",)            # Table 5 columns
TRAIN_METHODS = METHODS + ("mixed",)           # Table 5 rows
VIEWS = ("full", "center")
COLOR_MODES = ("color", "gray")

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
            self._files = files[:max_images] if max_images is not None else files
            # names for captions and CSVs: a non-UTF-8 file name shown with U+FFFD, read by its bytes
            self.names = [os.fsencode(f).decode("utf-8", "replace") for f in self._files]
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
        path = os.path.join(self.source, self._files[i])
        try:  # np.fromfile + imdecode: any file name (cv2.imread crashed on a non-UTF-8 one)
            img = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_COLOR)
        except (OSError, ValueError) as e:
            raise AnalysisError("%s: cannot read image file '%s': %s"
                                % (self.who, os.path.join(self.source, self.names[i]), e))
        if img is None:
            raise AnalysisError("%s: cannot decode image file '%s'" % (self.who, os.path.join(self.source, self.names[i])))
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
    flag = transforms.INTERP_FLAGS[interp]
    if view == "full":
        return transforms.downsample_chw(chw, size, flag)
    if view == "center":
        h, w = chw.shape[1:]
        if h < crop or w < crop:
            raise AnalysisError("image is %dx%d, smaller than the %d center crop (use --view full)" % (h, w, crop))
        return transforms.downsample_chw(transforms.crop_chw(chw, (h - crop) // 2, (w - crop) // 2, crop), size, flag)
    raise AnalysisError("view must be one of %s, got %r" % (VIEWS, view))


def normalise_views(views, gray, eps=EPS):
    """uint8 views (3 x S x S each) -> float32 K x 3 x S x S, colour mode + per-image normalisation."""
    s = views[0].shape[1]
    out = np.empty((len(views), 3, s, s), np.float32)
    transforms.normalize_into(views, bool(gray), out, eps)
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
        for what, given, full in (("deploy prototxt", deploy, deploy_path), ("weights", weights, weights_path)):
            if os.path.isdir(full):
                raise AnalysisError("%s '%s' is a directory, not a file (%s)" % (what, given, full))
        if not os.path.isfile(deploy_path):
            raise AnalysisError("deploy prototxt '%s' does not exist (looked in %s)" % (deploy, deploy_path))
        if not os.path.isfile(weights_path):
            raise AnalysisError("weights '%s' do not exist (looked in %s); train a model first (README) or "
                                "pass --weights" % (weights, weights_path))
        from ltc import model_checks
        try:  # a wrong prototxt or model is a message, not Caffe's CHECK abort
            model_checks.read_net_prototxt(deploy_path, "deploy prototxt")
            wparam = model_checks.read_weights(weights_path, "weights")
        except model_checks.ModelError as e:
            raise AnalysisError(str(e))
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
        try:
            model_checks.check_fit(net, wparam, deploy_path, weights_path)
        except model_checks.ModelError as e:
            raise AnalysisError(str(e))
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


def extract_features(phi, images, view="full", crop=CROP_SIZE, interp="area", color_mode="color", eps=EPS,
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
