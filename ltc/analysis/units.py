"""The start of a counting net, seen from its outputs (issue 26; docs/design.md, "The start").

* live units: an fc8 unit is *live* on a set of inputs if its ReLU'd output is > 0 on at least
  one of them. A unit that is 0 on every input gets no gradient from eq. 4 through its ReLU and
  stays dead; the collapse towards the trivial solution shows as few live units.
* |phi|^2: the squared norm of the counting vector, to compare with the margin M of eq. 4 (the
  hinge is active where |phi(Dy) - sum phi(T)|^2 < M).
* the amplitude check: each input is normalised on its own (zero mean, unit std over its pixels),
  so on a black background the items of a crowded scene come out fainter than those of a sparse
  one. The *foreground amplitude* of a scene is the mean normalised value of its foreground
  pixels above the normalised background: mean(v[fg]) / std(v) for a black background (v the
  input before normalisation). Within one count k, a net whose |phi| follows the amplitude rather
  than the items shows a positive Spearman(|phi|, amplitude); across k the amplitude falls, so
  such a net's |phi| falls with k.

Plain numpy on feature matrices (N x dim) and uint8 images, testable without Caffe.
"""
import numpy as np

from ltc.analysis import metrics
from ltc.analysis.features import AnalysisError
from ltc.params import EPS


def unit_stats(F, threshold=0.0):
    """Live-unit statistics of counting vectors F (N x dim): dict(n_inputs, dim, live (units > threshold
    on at least one input), active_per_input (mean number of units > threshold per input),
    sq_norm_mean, sq_norm_median (|phi|^2), active_fraction (per unit: fraction of inputs where > threshold))."""
    F = np.asarray(F, np.float64)
    if F.ndim != 2 or len(F) == 0:
        raise AnalysisError("unit_stats needs an N x dim matrix with N >= 1, got shape %s" % (F.shape,))
    on = F > threshold
    sq = (F ** 2).sum(axis=1)
    return dict(n_inputs=int(F.shape[0]), dim=int(F.shape[1]), threshold=float(threshold),
                live=int(on.any(axis=0).sum()), active_per_input=float(on.sum(axis=1).mean()),
                sq_norm_mean=float(sq.mean()), sq_norm_median=float(np.median(sq)),
                active_fraction=on.mean(axis=0))


def units_line(st):
    """One line of unit_stats for the terminal."""
    return ("fc8 units live (> %g on at least one of %d inputs): %d of %d; active per input %.1f; "
            "|phi|^2 mean %.4g, median %.4g"
            % (st["threshold"], st["n_inputs"], st["live"], st["dim"], st["active_per_input"],
               st["sq_norm_mean"], st["sq_norm_median"]))


def foreground_amplitude(view, gray=False, background=0, eps=EPS):
    """Foreground amplitude of one uint8 input view (3 x S x S) on a uniform ``background`` level: mean(|v - background|) over the
    foreground pixels divided by (std(v) + eps), with v in the colour mode the net sees (gray =
    channel mean) and std over all pixels and channels as the per-image normalisation takes it.
    The foreground is every pixel where some channel differs from the background. nan for an
    input without foreground (k = 0)."""
    v = np.asarray(view, np.float64)
    if v.ndim != 3:
        raise AnalysisError("foreground_amplitude wants a 3 x S x S view, got shape %s" % (v.shape,))
    if gray:
        v = np.repeat(v.mean(axis=0, keepdims=True), v.shape[0], axis=0)
    d = np.abs(v - background)
    fg = (d > 0).any(axis=0)
    if not fg.any():
        return float("nan")
    return float(d[:, fg].mean() / (v.std() + eps))


def amplitude_check(norms, counts, amplitudes, min_per_k=5):
    """Within each count k (>= 1, with at least ``min_per_k`` scenes), Spearman(|phi|, amplitude).

    Returns dict(per_k=[dict(k, n, amplitude_mean, spearman)], mean_spearman (weighted by n, over the
    ks where it is defined), amplitude_vs_k (Spearman of amplitude with k over scenes with k >= 1))."""
    norms, counts, amp = (np.asarray(a, np.float64).ravel() for a in (norms, counts, amplitudes))
    if not len(norms) == len(counts) == len(amp):
        raise AnalysisError("amplitude_check: %d norms, %d counts, %d amplitudes" % (len(norms), len(counts), len(amp)))
    rows = []
    for k in np.unique(counts):
        sel = (counts == k) & np.isfinite(amp)
        if k < 1 or sel.sum() < min_per_k:
            continue
        rows.append(dict(k=int(k), n=int(sel.sum()), amplitude_mean=float(amp[sel].mean()),
                         spearman=metrics.spearman(norms[sel], amp[sel])))
    ok = [r for r in rows if np.isfinite(r["spearman"])]
    mean = (sum(r["n"] * r["spearman"] for r in ok) / sum(r["n"] for r in ok)) if ok else float("nan")
    fg = (counts >= 1) & np.isfinite(amp)
    return dict(per_k=rows, mean_spearman=float(mean),
                amplitude_vs_k=metrics.spearman(amp[fg], counts[fg]) if fg.sum() >= 2 else float("nan"))


def amplitude_line(res):
    return ("amplitude check: Spearman(amplitude, k) over the scenes = %.3f; within each k, Spearman(|phi|, "
            "amplitude) = %.3f (mean over %d counts; > 0: |phi| follows the per-image contrast)"
            % (res["amplitude_vs_k"], res["mean_spearman"], len(res["per_k"])))
