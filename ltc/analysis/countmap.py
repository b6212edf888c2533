"""Is counting additive? A least-squares map from the counting vector to the object count.

If phi counts additively, the count k of a scene is a linear function of phi(scene): fit
k ~ w . phi + c by least squares on one set of scenes (train), then round the prediction on
another set (val) and score the exact and the +-1 hits. The fit uses numpy's lstsq with a
small ridge ``alpha`` (0 = plain least squares) so that a 1000-d vector fitted on 2,000 scenes
stays well posed when many entries are dead (all zero).
"""
import numpy as np


def fit_count_map(F, k, alpha=1e-3):
    """(w, c) minimising |F w + c - k|^2 + alpha |w|^2 (c is not penalised)."""
    F = np.asarray(F, np.float64).reshape(len(F), -1)
    k = np.asarray(k, np.float64).ravel()
    if len(F) != len(k) or not len(k):
        raise ValueError("fit_count_map: %d feature rows for %d counts" % (len(F), len(k)))
    mu, km = F.mean(0), k.mean()
    X = F - mu
    if alpha > 0:
        X = np.vstack([X, np.sqrt(alpha) * np.eye(X.shape[1])])
        y = np.concatenate([k - km, np.zeros(F.shape[1])])
    else:
        y = k - km
    w = np.linalg.lstsq(X, y, rcond=None)[0]
    return w, km - mu @ w


def predict_count(F, w, c):
    return np.asarray(F, np.float64).reshape(len(F), -1) @ w + c


def count_scores(pred, k):
    """dict(exact=fraction with round(pred) == k, within1=fraction with |round(pred) - k| <= 1,
    mae=mean |pred - k|, n)."""
    pred = np.asarray(pred, np.float64).ravel()
    k = np.asarray(k, np.float64).ravel()
    err = np.abs(np.rint(pred) - k)
    return dict(exact=float((err == 0).mean()), within1=float((err <= 1).mean()),
                mae=float(np.abs(pred - k).mean()), n=int(len(k)))
