"""The contrastive counting loss (eq. 4), numpy core: float64 inside, no Caffe needed.

For one sample with counting vectors t_j = phi(T_j x) (the four tiles), a = phi(D x) and
b = phi(D y) (another image), s = t_1 + ... + t_4:
    l(x, y) = |a - s|^2 + max(0, M - |b - s|^2)
with squared Euclidean norms over the whole vector; the batch loss is the mean of l.
At the hinge's kink (|b - s|^2 == M exactly) the hinge counts as inactive.
The Caffe layer is python_layers/counting_loss.py.
"""
import numpy as np

from ltc import knobs
from ltc.params import parse_params

DEFAULT_M = knobs.MARGIN      # the paper's M = 10, declared in ltc/knobs.py (LOSS)
PARAM_KEYS = knobs.LOSS
INPUT_NAMES = ("phi(T1)", "phi(T2)", "phi(T3)", "phi(T4)", "phi(Dx)", "phi(Dy)")
# The loss layer's optional extra tops (loss_weight 0 in the generated nets), in this order.
DIAGNOSTICS = ("count_term", "contrast_term", "hinge_active", "norm_dx")


def counting_loss_forward(tiles, dx, dy, M=DEFAULT_M):
    """Eq. 4 averaged over the batch.

    tiles: sequence of four N x K arrays; dx, dy: N x K arrays.
    Returns (loss, per_sample, cache) where cache feeds ``counting_loss_backward``.
    """
    if len(tiles) != 4:
        raise ValueError("counting loss needs exactly four tile features, got %d" % len(tiles))
    t = [np.asarray(x, dtype=np.float64).reshape(len(x), -1) for x in tiles]
    a = np.asarray(dx, dtype=np.float64).reshape(len(dx), -1)
    b = np.asarray(dy, dtype=np.float64).reshape(len(dy), -1)
    s = t[0] + t[1] + t[2] + t[3]
    r_pos = a - s                      # should be small: D x counts what the tiles count
    r_neg = b - s                      # should be large: another image counts differently
    d_pos = np.einsum("nk,nk->n", r_pos, r_pos)
    d_neg = np.einsum("nk,nk->n", r_neg, r_neg)
    hinge = M - d_neg
    active = hinge > 0
    per_sample = d_pos + np.where(active, hinge, 0.0)
    loss = per_sample.mean() if len(per_sample) else 0.0
    return loss, per_sample, (r_pos, r_neg, active)


def counting_loss_diagnostics(dx, cache, M=DEFAULT_M):
    """The DIAGNOSTICS of one forward pass, as a dict of floats (batch means):
    count_term = mean |a - s|^2, contrast_term = mean max(0, M - |b - s|^2), hinge_active =
    fraction of samples with |b - s|^2 < M, norm_dx = mean |a|. dx: the N x K phi(Dx);
    cache: the third value of ``counting_loss_forward``."""
    r_pos, r_neg, active = cache
    a = np.asarray(dx, dtype=np.float64).reshape(len(dx), -1)
    if not len(a):
        return dict.fromkeys(DIAGNOSTICS, 0.0)
    d_pos = np.einsum("nk,nk->n", r_pos, r_pos)
    d_neg = np.einsum("nk,nk->n", r_neg, r_neg)
    return dict(count_term=float(d_pos.mean()),
                contrast_term=float(np.where(active, M - d_neg, 0.0).mean()),
                hinge_active=float(active.mean()),
                norm_dx=float(np.sqrt(np.einsum("nk,nk->n", a, a)).mean()))


def counting_loss_backward(cache, scale=1.0):
    """Gradients of the batch-mean loss (times ``scale``, Caffe's top diff).

    Returns (g_tile, g_dx, g_dy): the gradient for each of the four tiles (all
    equal, since each tile enters through the sum s), for phi(Dx) and phi(Dy).
    """
    r_pos, r_neg, active = cache
    n = r_pos.shape[0]
    c = 2.0 * scale / max(n, 1)
    g_dx = c * r_pos
    g_dy = -c * active[:, None] * r_neg
    g_tile = -g_dx - g_dy          # d/ds = -2 r_pos + 2 [active] r_neg
    return g_tile, g_dx, g_dy


def parse_loss_params(param_str):
    """Validated param_str of the loss layer (knobs.LOSS: M > 0); raises ParamError."""
    return parse_params(param_str, PARAM_KEYS, "CountingLossLayer")
