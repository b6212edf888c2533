"""The counting pretext's input transforms (docs/design.md, Input pipeline), as plain numpy/OpenCV functions.

One training sample is six network inputs, each 3 x S x S float32 (S = crop / 2):

    t1, t2, t3, t4   the four tiles of a random crop x of the stored image, in the order
                     top-left, top-right, bottom-left, bottom-right;
    dx               D(x) = cv2.resize(crop, (S, S), interpolation=m);
    dy               D(y), y = a random crop of ANOTHER source image of the same batch
                     (a derangement over source-image identity), same m and colour mode.

Per sample the colour mode is gray with probability ``gray_prob`` (gray = the average of
the three channels, replicated to 3 channels) for all six inputs alike. Each input is then
normalised on its own: ``(v - mean) / (std + eps)``, mean and (population) std over all
its pixels and channels, pixel values on the 0..255 scale (a uniform input becomes 0).

Images are handled in Caffe's C x H x W uint8 BGR layout (the raw Datum layout), so tiles
are views and D is resized plane by plane (bit-identical to resizing the H x W x 3 crop).
Randomness comes from ``plan_batch``: every random choice of batch ``b`` is drawn from a
generator seeded with ``(seed, phase, b)``, so a batch does not depend on which worker
makes it or on what was made before it. Nothing here imports Caffe.

    plan = plan_batch(seed=1701, phase="train", batch_index=0, n_db=1000, batch_size=8)
    images = [chw_image_of(i) for i in plan.index]          # 3 x H x W uint8 each
    out = np.empty(batch_shape(8, 228), np.float32)          # 6 x 8 x 3 x 114 x 114
    fill_batch(images, plan, 228, out)                       # out[0] = t1 ... out[5] = dy
"""
from collections import namedtuple

import cv2
import numpy as np

from ltc import knobs
from ltc.knobs import EPS, GRAY_PROB, INTERPOLATION

# OpenCV methods the paper draws from, in a fixed order (codes 0..3 index this tuple).
INTERP_NAMES = knobs.INTERP_METHODS
INTERP_FLAGS = {"linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC,
                "area": cv2.INTER_AREA, "lanczos": cv2.INTER_LANCZOS4}
# Values of the data layer's ``interpolation`` key (declared in ltc/knobs.py).
INTERPOLATION_MODES = knobs.INTERPOLATION_MODES
CROP_SIZES = knobs.CROP_SIZES
INPUT_NAMES = ("t1", "t2", "t3", "t4", "dx", "dy")
PHASES = ("train", "test")

_PHASE_CODE = {"train": 0, "test": 1}
_EPOCH_STREAM = 2  # SeedSequence stream for TRAIN per-epoch permutations


def batch_shape(batch_size, crop_size):
    """Shape of one prepared batch: (6, N, 3, S, S), block k = input INPUT_NAMES[k]."""
    s = crop_size // 2
    return (len(INPUT_NAMES), batch_size, 3, s, s)


# ----------------------------------------------------------------------------- geometry

def crop_chw(img, y0, x0, crop):
    """View of the crop x crop region at (y0, x0) of a 3 x H x W image."""
    if y0 < 0 or x0 < 0 or y0 + crop > img.shape[1] or x0 + crop > img.shape[2]:
        raise ValueError("crop %d at (%d, %d) does not fit a %dx%d image" % (crop, y0, x0, img.shape[1], img.shape[2]))
    return img[:, y0:y0 + crop, x0:x0 + crop]


def tiles_chw(crop):
    """The four tiles of a 2x2 grid of a 3 x C x C crop (views): TL, TR, BL, BR."""
    s = crop.shape[1] // 2
    return [crop[:, :s, :s], crop[:, :s, s:2 * s], crop[:, s:2 * s, :s], crop[:, s:2 * s, s:2 * s]]


def downsample_chw(crop, size, interp):
    """D(crop): each plane resized to size x size with OpenCV flag ``interp``; 3 x size x size uint8.

    Equal to ``cv2.resize(crop_hwc, (size, size), interpolation=interp)`` transposed to CHW
    (OpenCV resizes channels independently; tests/test_count_transforms.py checks equality).
    """
    out = np.empty((crop.shape[0], size, size), crop.dtype)
    for c in range(crop.shape[0]):
        cv2.resize(crop[c], (size, size), dst=out[c], interpolation=interp)
    return out


def crop_offset(u, height, width, crop):
    """Map a uniform draw u = (uy, ux) in [0, 1)^2 to an integer crop corner (y0, x0)."""
    if height < crop or width < crop:
        raise ValueError("image %dx%d is smaller than the %d crop" % (height, width, crop))
    return int(u[0] * (height - crop + 1)), int(u[1] * (width - crop + 1))


def sample_views(img_x, img_y, off_x, off_y, crop, interp):
    """The six uint8 inputs (3 x S x S each) of one sample, before colour mode and normalisation.

    img_x, img_y: 3 x H x W uint8; off_x, off_y: uniform draws for the two crops (see
    crop_offset); interp: OpenCV flag. Tiles are views into img_x.
    """
    x = crop_chw(img_x, *crop_offset(off_x, img_x.shape[1], img_x.shape[2], crop), crop)
    y = crop_chw(img_y, *crop_offset(off_y, img_y.shape[1], img_y.shape[2], crop), crop)
    s = crop // 2
    return tiles_chw(x) + [downsample_chw(x, s, interp), downsample_chw(y, s, interp)]


# ----------------------------------------------------------------------------- colour, normalisation

def to_gray(img):
    """Reference gray: the average of the three channels replicated to 3 channels (float32, CHW)."""
    g = img.astype(np.float64).mean(axis=0, keepdims=True)
    return np.repeat(g, img.shape[0], axis=0).astype(np.float32)


def normalize(img, eps=EPS):
    """Reference per-image normalisation (v - mean) / (std + eps) over all pixels and channels."""
    v = np.asarray(img, np.float64)
    return ((v - v.mean()) / (v.std() + eps)).astype(np.float32)


def _plane_stats(planes):
    """Mean and population std over all pixels of a list of 2-D uint8/uint16 planes."""
    n, s1, s2 = 0, 0.0, 0.0
    for p in planes:
        m, sd = cv2.meanStdDev(p)
        k = p.shape[0] * p.shape[1]
        m, sd = float(m[0, 0]), float(sd[0, 0])
        n += k
        s1 += m * k
        s2 += (sd * sd + m * m) * k
    mean = s1 / n
    return mean, np.sqrt(max(s2 / n - mean * mean, 0.0))


def normalize_into(views, gray, out, eps=EPS):
    """Colour mode + per-image normalisation of a sample's six uint8 inputs, written into ``out``.

    views: six 3 x S x S uint8 arrays (views allowed); gray: bool, the sample's colour mode;
    out: 6 x 3 x S x S float32 (e.g. ``batch[:, i]``), each out[k, c] a contiguous plane.
    Equal (to float32 rounding) to ``normalize(to_gray(v) if gray else v, eps)`` per input;
    statistics are computed in float64 by OpenCV, the result written in one pass per plane.
    """
    for k, v in enumerate(views):
        dst = out[k]
        if gray:
            s = _channel_sum(v)
            m, sd = _plane_stats([s])                        # gray = s / 3
            a = 1.0 / (sd + 3.0 * eps)                      # (s/3 - m/3) / (sd/3 + eps)
            cv2.addWeighted(s, a, s, 0.0, -m * a, dst=dst[0], dtype=cv2.CV_32F)
            for c in range(1, dst.shape[0]):
                dst[c] = dst[0]
        else:
            planes = [v[c] for c in range(v.shape[0])]
            m, sd = _plane_stats(planes)
            a = 1.0 / (sd + eps)
            for c, p in enumerate(planes):
                cv2.addWeighted(p, a, p, 0.0, -m * a, dst=dst[c], dtype=cv2.CV_32F)
    return out


def _channel_sum(v):
    """Exact sum of a 3 x S x S uint8 view's channels (uint16, 0..765): three times its gray."""
    s = cv2.add(v[0], v[1], dtype=cv2.CV_16U)
    return cv2.add(s, v[2], dtype=cv2.CV_16U)


def input_std(view, gray):
    """The std (0-255 scale) that normalize_into divides ``view`` by, before eps: over all
    pixels and channels of the view, or of its channel average when ``gray``."""
    if gray:
        return _plane_stats([_channel_sum(view)])[1] / 3.0
    return _plane_stats([view[c] for c in range(view.shape[0])])[1]


# ----------------------------------------------------------------------------- randomness

BatchPlan = namedtuple("BatchPlan", [
    "index",     # (N,) int64: DB position (key order) of each member's source image x
    "partner",   # (N,) int64: batch position whose source image gives y (never the same image)
    "interp",    # (N,) int64: code into INTERP_NAMES of each sample's interpolation
    "gray",      # (N,) bool: sample is gray
    "off_x",     # (N, 2) float64 in [0, 1): crop draw for x (see crop_offset)
    "off_y",     # (N, 2) float64 in [0, 1): crop draw for y
])


def epoch_permutation(seed, epoch, n_db):
    """TRAIN order of epoch ``epoch``: a permutation of range(n_db) seeded with (seed, epoch)."""
    return np.random.default_rng([seed, _EPOCH_STREAM, epoch]).permutation(n_db)


def batch_sources(seed, phase, batch_index, n_db, batch_size, test_batches=0, perm_cache=None):
    """DB positions of the N members of batch ``batch_index``.

    train: the stream of all samples walks a fresh permutation of the DB per epoch (so a
           batch larger than the DB holds each image about N/n_db times);
    test:  key order, batch j = b mod test_batches covers positions j*N .. j*N+N-1 (mod n_db);
           test_batches = 0 means ceil(n_db / N), one pass over the DB.
    """
    if phase == "test":
        tb = test_batches or -(-n_db // batch_size)
        j = batch_index % tb
        return (j * batch_size + np.arange(batch_size, dtype=np.int64)) % n_db
    pos = batch_index * batch_size + np.arange(batch_size, dtype=np.int64)
    epochs, within = np.divmod(pos, n_db)
    out = np.empty(batch_size, np.int64)
    for e in np.unique(epochs):
        e = int(e)
        if perm_cache is not None and e in perm_cache:
            perm = perm_cache[e]
        else:
            perm = epoch_permutation(seed, e, n_db)
            if perm_cache is not None:
                if len(perm_cache) >= 4:
                    perm_cache.pop(min(perm_cache))
                perm_cache[e] = perm
        sel = epochs == e
        out[sel] = perm[within[sel]]
    return out


def derangement(ids, rng, tries=100):
    """partner[i] = a batch position whose id differs from ids[i], for every i.

    A uniformly random permutation with no fixed id (rejection sampling) when one is found
    within ``tries``; else a permutation built by sorting the members by id (random group
    order) and shifting by the largest group size, which exists when no id fills more than
    half the batch; else (tiny DBs) each partner is drawn uniformly among the members with
    another id. Raises ValueError when all members share one id.
    """
    ids = np.asarray(ids)
    n = len(ids)
    uniq, inverse, counts = np.unique(ids, return_inverse=True, return_counts=True)
    if len(uniq) < 2:
        raise ValueError("a derangement needs at least two different source images in the batch, got ids %s"
                         % np.unique(ids))
    for _ in range(tries):
        p = rng.permutation(n)
        if not np.any(ids[p] == ids):
            return p
    m = int(counts.max())
    if 2 * m <= n:
        group_key = rng.permutation(len(uniq))[inverse]
        order = np.lexsort((rng.random(n), group_key))
        p = np.empty(n, np.int64)
        p[order] = order[(np.arange(n) + m) % n]
        return p
    p = np.empty(n, np.int64)
    for i in range(n):
        others = np.flatnonzero(ids != ids[i])
        p[i] = others[rng.integers(len(others))]
    return p


PARTNER_MODES = knobs.PARTNER_MODES


def grouped_derangement(ids, groups, rng):
    """Partners within groups: partner[i] is a member of the same group as i with another id, for
    every member whose group holds at least two different ids in the batch (a derangement of
    each such group); the other members get a partner from the whole batch (``derangement``'s
    rules). The result never pairs a member with its own id."""
    ids = np.asarray(ids)
    groups = np.asarray(groups)
    p = derangement(ids, rng)        # the fallback for members whose group cannot pair within itself
    for g in np.unique(groups):
        members = np.flatnonzero(groups == g)
        if len(np.unique(ids[members])) >= 2:
            p[members] = members[derangement(ids[members], rng)]
    return p


def source_groups(keys):
    """The source of each LMDB key, for partner = "same_source": the second '_' field of keys of the
    form ``<index>_<source>_...`` (ltc/mixdata.py writes them so), else one source for all."""
    parts = [k.decode("utf-8", "replace") if isinstance(k, bytes) else str(k) for k in keys]
    fields = [k.split("_", 2) for k in parts]
    if not all(len(f) == 3 and f[0].isdigit() for f in fields):
        return np.zeros(len(parts), np.int64)
    names = sorted({f[1] for f in fields})
    return np.array([names.index(f[1]) for f in fields], np.int64)


def plan_batch(seed, phase, batch_index, n_db, batch_size, interpolation=INTERPOLATION, gray_prob=GRAY_PROB,
               test_batches=0, perm_cache=None, groups=None):
    """Every random choice of one batch, from a generator seeded with (seed, phase, batch).

    In the test phase the batch index is first reduced modulo the number of test batches,
    so the test net sees the same batches (same crops, modes, partners) on every pass.
    groups: None (the paper: y is any other image of the batch) or a source group per DB
    index (partner "same_source": y comes from the same source where the batch allows it).
    The arguments are trusted (this runs once per batch; the data layer's setup checked them).
    """
    index = batch_sources(seed, phase, batch_index, n_db, batch_size, test_batches, perm_cache)
    b = batch_index
    if phase == "test":
        b = batch_index % (test_batches or -(-n_db // batch_size))
    rng = np.random.default_rng([seed, _PHASE_CODE[phase], b])
    partner = derangement(index, rng) if groups is None else grouped_derangement(index, np.asarray(groups)[index], rng)
    if interpolation == "per_batch":
        interp = np.full(batch_size, rng.integers(len(INTERP_NAMES)), np.int64)
    elif interpolation == "per_sample":
        interp = rng.integers(len(INTERP_NAMES), size=batch_size).astype(np.int64)
    else:
        interp = np.full(batch_size, INTERP_NAMES.index(interpolation), np.int64)
    gray = rng.random(batch_size) < gray_prob
    off_x = rng.random((batch_size, 2))
    off_y = rng.random((batch_size, 2))
    return BatchPlan(index, partner, interp, gray, off_x, off_y)


# ----------------------------------------------------------------------------- assembly

def fill_batch(images, plan, crop_size, out, eps=EPS):
    """Write a whole batch into ``out`` (6 x N x 3 x S x S float32).

    images: the N source images in batch order (3 x H x W uint8 each, H, W >= crop_size),
    i.e. images[i] is the image at DB position plan.index[i].
    """
    n = len(plan.index)
    if out.shape != batch_shape(n, crop_size) or out.dtype != np.float32:
        raise ValueError("out must be float32 %s, got %s %s" % (batch_shape(n, crop_size), out.dtype, out.shape))
    for i, views in enumerate(batch_views(images, plan, crop_size)):
        normalize_into(views, bool(plan.gray[i]), out[:, i], eps)
    return out


def batch_views(images, plan, crop_size):
    """The six uint8 inputs of each batch member, in batch order, as the data layer makes them
    (images and plan as in fill_batch); colour mode and normalisation are applied after."""
    for i in range(len(plan.index)):
        yield sample_views(images[i], images[plan.partner[i]], plan.off_x[i], plan.off_y[i], crop_size,
                           INTERP_FLAGS[INTERP_NAMES[plan.interp[i]]])
