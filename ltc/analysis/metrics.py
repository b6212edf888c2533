"""Metrics on counting vectors F (N x dim): norms, nearest neighbours, top neurons, sparsity,
Spearman's correlation and binned statistics (used by tools/analyze.py)."""
import numpy as np

from ltc.analysis.features import AnalysisError


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


def spearman(x, y):
    """Spearman's rank correlation (scipy.stats.spearmanr); nan if a side is constant or too short."""
    from scipy import stats
    x, y = np.asarray(x, np.float64).ravel(), np.asarray(y, np.float64).ravel()
    if len(x) != len(y):
        raise AnalysisError("spearman: %d vs %d values" % (len(x), len(y)))
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(stats.spearmanr(x, y).statistic)


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


