"""The in-domain transfer probe's library part (tools/domain_probe.py is the command).

Items in the pretext's domain: one Fashion-MNIST item composed on a black 256x256 canvas exactly as
a scene item (ltc/fashion.py ``compose_scene``, what data_prep/fashion_scenes.py uses, with k = 1: side uniform in 24..48 px,
random tint, random position 14 px inside the border), then seen as D(x) is at test time: the
central 228x228 crop downsampled to 114x114 (INTER_AREA), normalised on its own (zero mean, unit
std over its pixels and channels).

Features: the frozen conv1..conv5 and pool5 outputs of the counting deploy net (prototxt/deploy.prototxt,
ReLU applied in place), extracted once per model through pycaffe; each map is reduced to its
per-channel spatial mean and spatial maximum (2 x channels numbers: conv1 192, conv2 512, conv3 768,
conv4 768, conv5 512, pool5 512), which keeps the classifier cheap and does not depend on where
the item lies.

Classifier: per layer, features standardised with the training subset's mean and std, then
scikit-learn's RidgeClassifierCV, its penalty chosen among ``ALPHAS`` by leave-one-out
cross-validation on the training subset only (the efficient closed form). Top-1 on the val items.

Design and statistics: label subsets of n items per class drawn from a fixed training pool with
seeds s = 1..S (the same subsets for every model: paired); random inits drawn with Caffe's Xavier
distribution (``xavier_init``). The gain of a layer for seed s is acc(counting, s) minus the mean
over the random inits of acc(random_r, s); its mean over seeds and a paired 95 % t interval
(df = S - 1) are reported, and the gain against the best random init too.
"""
import hashlib
import math
import os

import cv2
import numpy as np

from ltc import REPO
from ltc.fashion import compose_scene
from ltc import transforms
from ltc.params import CROP_SIZE, EPS

LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "pool5")
ALPHAS = tuple(float(a) for a in np.logspace(-2, 5, 15))
DEPLOY = "prototxt/deploy.prototxt"
CROP = CROP_SIZE
VIEW = 114


class DomainProbeError(ValueError):
    """Bad input to the probe; the message names the file and the problem."""


def item_scene(item, rng, compose=None, min_item=24, max_item=48, margin=14, gap=2):
    """One item placed as in the scenes (compose_scene with k = 1): 256x256x3 uint8 BGR."""
    compose = compose or compose_scene
    img, boxes = compose([item], rng, 256, min_item, max_item, margin, gap, False)
    return img, boxes[0]


def d_view(img, crop=CROP, size=VIEW):
    """The test-time D(x) of a 256x256 image: central crop, INTER_AREA to size, 3 x size x size uint8."""
    chw = np.ascontiguousarray(img.transpose(2, 0, 1))
    h, w = chw.shape[1:]
    c = transforms.crop_chw(chw, (h - crop) // 2, (w - crop) // 2, crop)
    return transforms.downsample_chw(c, size, cv2.INTER_AREA)


def normalised(views, eps=EPS):
    out = np.empty((len(views), 3) + views[0].shape[1:], np.float32)
    for i, v in enumerate(views):
        transforms.normalize_into([v], False, out[i:i + 1], eps)
    return out


def balanced_indices(labels, per_class, rng, classes=None):
    """``per_class`` indices of every class, drawn without replacement (sorted)."""
    classes = np.unique(labels) if classes is None else classes
    out = []
    for c in classes:
        idx = np.flatnonzero(labels == c)
        if len(idx) < per_class:
            raise DomainProbeError("class %d has %d items, fewer than %d" % (c, len(idx), per_class))
        out.append(rng.choice(idx, per_class, replace=False))
    return np.sort(np.concatenate(out))


def make_items(imgs, labels, per_class, seed, compose=None):
    """(views N x 3 x 114 x 114 uint8, labels, boxes) of per_class items of each class, seeded."""
    rng = np.random.RandomState(seed)
    idx = balanced_indices(labels, per_class, rng)
    idx = idx[rng.permutation(len(idx))]
    compose = compose or compose_scene
    views, boxes = [], []
    for j in idx:
        img, box = item_scene(imgs[j], rng, compose)
        views.append(d_view(img))
        boxes.append(box)
    return np.stack(views), labels[idx].astype(np.int64), np.array(boxes)


def pool_features(blob):
    """N x C x H x W -> N x 2C: per-channel spatial mean, then spatial max."""
    b = np.asarray(blob, np.float32).reshape(blob.shape[0], blob.shape[1], -1)
    return np.concatenate([b.mean(2), b.max(2)], axis=1)


def xavier_init(net, seed):
    """Fill every parameter of a pycaffe net as Caffe's XavierFiller (variance_norm FAN_IN) and a
    constant-0 bias do: weights uniform in +-sqrt(3 / fan_in), fan_in = count / num_output
    (the counting nets' fillers, ltc/nets.py), drawn with numpy from ``seed``."""
    rng = np.random.RandomState(seed)
    for name in net.params:
        blobs = net.params[name]
        w = blobs[0].data
        fan_in = w.size / float(w.shape[0])
        scale = math.sqrt(3.0 / fan_in)
        w[...] = rng.uniform(-scale, scale, w.shape).astype(np.float32)
        for b in list(blobs)[1:]:
            b.data[...] = 0


def open_net(weights=None, seed=None, deploy=DEPLOY):
    """The deploy net with ``weights`` (every parameter must be filled by the file) or a Xavier init."""
    import caffe
    caffe.set_mode_cpu()
    deploy_path = os.path.join(REPO, deploy) if not os.path.isabs(deploy) else deploy
    if not os.path.isfile(deploy_path):
        raise DomainProbeError("%s: no such deploy prototxt" % deploy_path)
    net = caffe.Net(deploy_path, caffe.TEST)
    missing = [l for l in LAYERS if l not in net.blobs]
    if missing:
        raise DomainProbeError("%s has no blob(s) %s" % (deploy_path, ", ".join(missing)))
    if weights is None:
        xavier_init(net, seed)
        return net
    if not os.path.isfile(weights):
        raise DomainProbeError("%s: no such file" % weights)
    for blobs in net.params.values():
        for b in blobs:
            b.data[...] = np.nan
    try:
        net.copy_from(weights)
    except Exception as e:  # pragma: no cover - Caffe aborts on most bad files before this
        raise DomainProbeError("%s: cannot be loaded (%s)" % (weights, e))
    unfilled = [n for n in ("conv1", "conv2", "conv3", "conv4", "conv5")
                if any(np.isnan(b.data).any() for b in net.params[n])]
    if unfilled:
        raise DomainProbeError("%s does not fill %s of %s (layers are matched by name; is this a counting model?)"
                               % (weights, ", ".join(unfilled), deploy_path))
    return net


def extract(net, x, batch=100):
    """{layer: N x 2C float32} of float32 inputs x (N x 3 x 114 x 114)."""
    n = len(x)
    out = {}
    for i in range(0, n, batch):
        chunk = x[i:i + batch]
        if net.blobs["data"].data.shape[0] != len(chunk):
            net.blobs["data"].reshape(len(chunk), *x.shape[1:])
            net.reshape()
        net.blobs["data"].data[...] = chunk
        net.forward(end="pool5")
        for l in LAYERS:
            f = pool_features(net.blobs[l].data)
            if l not in out:
                out[l] = np.empty((n, f.shape[1]), np.float32)
            out[l][i:i + len(chunk)] = f
    return out


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fit_score(Xtr, ytr, Xva, yva, alphas=ALPHAS):
    """(top-1 % on val, chosen alpha) of a standardised RidgeClassifierCV (leave-one-out on train)."""
    from sklearn.linear_model import RidgeClassifierCV
    mu = Xtr.mean(0)
    sd = Xtr.std(0)
    sd[sd < 1e-8] = 1.0
    clf = RidgeClassifierCV(alphas=alphas)
    clf.fit((Xtr - mu) / sd, ytr)
    acc = 100.0 * float(np.mean(clf.predict((Xva - mu) / sd) == yva))
    return acc, float(clf.alpha_)


def t_quantile_975(df):
    from scipy import stats
    return float(stats.t.ppf(0.975, df))


def paired_interval(diffs):
    """(mean, half-width of the 95 % t interval) of paired differences (one per label-subset seed)."""
    d = np.asarray(diffs, np.float64)
    if len(d) < 2:
        return float(d.mean()), float("nan")
    return float(d.mean()), t_quantile_975(len(d) - 1) * float(d.std(ddof=1)) / math.sqrt(len(d))


def gains(acc, counting="counting", randoms=None):
    """acc: {(model, n, seed, layer): top-1}. Returns {(n, layer): dict(mean, half, lo, hi, vs_best,
    counting, random, random_min, random_max, seeds)}: the paired gain per seed against the mean of
    the random inits, and (vs_best) against the best random init of each seed."""
    models = sorted({m for m, _, _, _ in acc})
    randoms = randoms or [m for m in models if m != counting]
    out = {}
    for n in sorted({k[1] for k in acc}):
        seeds = sorted({k[2] for k in acc if k[1] == n})
        for layer in LAYERS:
            if (counting, n, seeds[0], layer) not in acc:
                continue
            c = np.array([acc[(counting, n, s, layer)] for s in seeds])
            r = np.array([[acc[(m, n, s, layer)] for m in randoms] for s in seeds])
            mean, half = paired_interval(c - r.mean(1))
            best_mean, best_half = paired_interval(c - r.max(1))
            out[(n, layer)] = dict(mean=mean, half=half, lo=mean - half, hi=mean + half, vs_best=best_mean,
                                   vs_best_half=best_half, counting=float(c.mean()), random=float(r.mean()),
                                   random_min=float(r.mean(0).min()), random_max=float(r.mean(0).max()),
                                   seeds=len(seeds), inits=len(randoms))
    return out
