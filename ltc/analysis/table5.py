"""Table 5 of the paper: how well a model trained with one downsampling method counts inputs
downsampled with another (|phi(D x) - sum_j phi(T_j x)| relative to the tile sum)."""
import numpy as np

from ltc import transforms
from ltc.analysis.features import METHODS, TEST_METHODS, TRAIN_METHODS, AnalysisError, hwc_to_chw, normalise_views
from ltc.params import CROP_SIZE, EPS, GRAY_PROB, SEED

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



def table5_inputs(img, idx, crop, seed, gray_prob, eps=EPS, size=None):
    """The eight normalised inputs of image number ``idx`` for eq. 6 and its draws.

    x = a crop x crop region at a position drawn from rng(seed, idx) (the same for every
    model); inputs: T1..T4, then D_m(x) for m in METHODS order; colour mode gray with
    probability gray_prob (same draw for all eight); ``mixed`` = a method drawn per image.
    Returns (float32 8 x 3 x S x S, dict(gray, mixed)).
    """
    rng = np.random.default_rng([seed, idx])
    chw = hwc_to_chw(img)
    y0, x0 = transforms.crop_offset(rng.random(2), chw.shape[1], chw.shape[2], crop)
    x = transforms.crop_chw(chw, y0, x0, crop)
    s = size or crop // 2
    views = transforms.tiles_chw(x) + [transforms.downsample_chw(x, s, transforms.INTERP_FLAGS[m]) for m in METHODS]
    gray = bool(rng.random() < gray_prob)
    mixed = int(rng.integers(len(METHODS)))
    return normalise_views(views, gray, eps), dict(gray=gray, mixed=mixed, y0=y0, x0=x0)


def table5(models, images, crop=CROP_SIZE, seed=SEED, gray_prob=GRAY_PROB, eps=EPS, chunk=8, progress=True):
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


