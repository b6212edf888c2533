"""Reading the loss diagnostics out of a parsed Caffe log (rows of ltc.analysis.caffelog.parse_caffe_log).

The counting loss layer writes count_term, contrast_term, hinge_active and norm_dx as extra
tops (python_layers/counting_loss.py); caffe prints them as "Train/Test net output" lines,
which the parser stores as ``train_<name>`` / ``test_<name>`` keys.
"""
from ltc.params import MARGIN

DIAGNOSTICS = ("count_term", "contrast_term", "hinge_active", "norm_dx")


def series(rows, prefix, name):
    """[(iteration, value)] of ``<prefix>_<name>`` over the rows that have it."""
    key = "%s_%s" % (prefix, name)
    return [(r["iteration"], r[key]) for r in rows if key in r]


def trivial_solution(rows, prefix="train", margin=MARGIN, norm_tol=0.05, loss_tol=0.05, last=3):
    """A warning string when the last ``last`` rows sit at the trivial solution, else None.

    The all-zero counting vector scores exactly M (count term 0, hinge M on every sample):
    a run whose mean |phi(Dx)| stays below ``norm_tol`` * sqrt(M) with the loss within
    ``loss_tol`` * M of M has collapsed there (or not left it yet).
    """
    loss_key = "loss" if prefix == "train" else "test_loss"
    norm_key = "%s_norm_dx" % prefix
    tail = [r for r in rows if norm_key in r and loss_key in r][-last:]
    if len(tail) < min(last, 1) or not tail:
        return None
    norm = max(r[norm_key] for r in tail)
    losses = [r[loss_key] for r in tail]
    if norm < norm_tol * margin ** 0.5 and all(abs(v - margin) <= loss_tol * margin for v in losses):
        return ("WARNING: the %s rows up to iteration %d sit at the trivial solution: mean |phi(Dx)| <= %.3g "
                "(near 0) and loss %s (near M = %g); the counting vector has collapsed to zero. Try a lower "
                "base_lr, a warm-up, or check the data." % (prefix, tail[-1]["iteration"], norm,
                                                             "/".join("%.3g" % v for v in losses), margin))
    return None
