"""Eq. 4: the numpy core against an independent formula, finite differences (float64),
and the Caffe Python layer inside a real caffe.Net (forward, FD gradients, propagate_down)."""
import os

import numpy as np
import pytest

from ltc import loss as lc
from ltc.params import ParamError


def reference_loss(feats, M):
    """Independent per-sample loop over eq. 4 (squared norms of the whole vector)."""
    t1, t2, t3, t4, a, b = [np.asarray(f, dtype=np.float64) for f in feats]
    total = 0.0
    for i in range(len(a)):
        s = t1[i] + t2[i] + t3[i] + t4[i]
        pos = sum((a[i][k] - s[k]) ** 2 for k in range(len(s)))
        neg = sum((b[i][k] - s[k]) ** 2 for k in range(len(s)))
        total += pos + max(0.0, M - neg)
    return total / len(a)


def random_feats(rng, n=5, k=7, scale=1.0):
    return [rng.rand(n, k) * scale for _ in range(6)]


@pytest.mark.parametrize("M,scale", [(10.0, 1.0), (10.0, 0.3), (2.0, 1.0), (50.0, 2.0)])
def test_forward_matches_reference(M, scale):
    rng = np.random.RandomState(0)
    f = random_feats(rng, scale=scale)
    loss, per_sample, _ = lc.counting_loss_forward(f[:4], f[4], f[5], M)
    assert loss == pytest.approx(reference_loss(f, M), rel=1e-12)
    assert per_sample.shape == (5,)


def test_hinge_is_on_whole_vector_not_per_dimension():
    # |b - s|^2 = 4 + 4 = 8 < M = 10 -> hinge 2; a per-dimension hinge would give 2 * (10 - 4) = 12
    z = np.zeros((1, 2))
    b = np.array([[2.0, 2.0]])
    loss, _, _ = lc.counting_loss_forward([z, z, z, z], z, b, 10.0)
    assert loss == pytest.approx(2.0)


def test_zero_features_give_exactly_M():
    z = np.zeros((4, 1000))
    for M in (10.0, 3.5):
        loss, per_sample, _ = lc.counting_loss_forward([z] * 4, z, z, M)
        assert loss == M
        assert np.all(per_sample == M)


def _numeric_grad(fun, x, eps=1e-6):
    g = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = x[i]
        x[i] = old + eps
        fp = fun()
        x[i] = old - eps
        fm = fun()
        x[i] = old
        g[i] = (fp - fm) / (2 * eps)
    return g


@pytest.mark.parametrize("scale", [0.3, 1.5])  # hinge active for most samples / for few
def test_backward_matches_finite_differences_float64(scale):
    rng = np.random.RandomState(1)
    f = random_feats(rng, n=4, k=6, scale=scale)
    M = 10.0
    loss, per_sample, cache = lc.counting_loss_forward(f[:4], f[4], f[5], M)
    g_tile, g_dx, g_dy = lc.counting_loss_backward(cache, scale=1.0)
    analytic = [g_tile] * 4 + [g_dx, g_dy]
    fun = lambda: lc.counting_loss_forward(f[:4], f[4], f[5], M)[0]  # noqa: E731
    for i in range(6):
        np.testing.assert_allclose(analytic[i], _numeric_grad(fun, f[i]), rtol=1e-6, atol=1e-8)
    # the hinge must be active for some and inactive for others in at least one case overall
    _, _, active = cache
    assert active.dtype == bool


def test_hinge_inactive_gives_no_gradient_to_dy():
    rng = np.random.RandomState(2)
    f = random_feats(rng, n=3, k=4)
    f[5] = f[5] + 100.0  # |b - s|^2 >> M
    _, _, cache = lc.counting_loss_forward(f[:4], f[4], f[5], 10.0)
    _, _, g_dy = lc.counting_loss_backward(cache)
    assert np.all(g_dy == 0)


# ----------------------------------------------------------------------------- in Caffe
caffe = pytest.importorskip("caffe")


def loss_net(tmp_path, n, k, param_str='{"M": 10}', stacked=False, propagate=None):
    if stacked:
        inputs = 'input: "f" input_shape { dim: %d dim: %d }\n' % (6 * n, k)
        bottoms = 'bottom: "f"'
    else:
        names = ["t1", "t2", "t3", "t4", "dx", "dy"]
        inputs = "".join('input: "%s" input_shape { dim: %d dim: %d }\n' % (nm, n, k) for nm in names)
        bottoms = " ".join('bottom: "%s"' % nm for nm in names)
    pd = "".join("propagate_down: %s " % ("true" if p else "false") for p in propagate) if propagate else ""
    text = ('name: "loss_only"\n%sforce_backward: true\n'
            'layer { name: "loss" type: "Python" %s top: "loss" loss_weight: 1 %s\n'
            '  python_param { module: "counting_loss" layer: "CountingLossLayer" param_str: \'%s\' } }\n'
            % (inputs, bottoms, pd, param_str))
    path = tmp_path / "loss.prototxt"
    path.write_text(text)
    return caffe.Net(str(path), caffe.TEST)


NAMES = ["t1", "t2", "t3", "t4", "dx", "dy"]


def test_caffe_layer_forward_and_fd_gradients(tmp_path):
    rng = np.random.RandomState(3)
    n, k = 3, 5
    net = loss_net(tmp_path, n, k)
    f = random_feats(rng, n, k, scale=0.5)
    for nm, x in zip(NAMES, f):
        net.blobs[nm].data[...] = x
    out = net.forward()
    assert float(np.asarray(out["loss"]).ravel()[0]) == pytest.approx(reference_loss(f, 10.0), rel=1e-5)
    net.backward()
    analytic = [net.blobs[nm].diff.copy() for nm in NAMES]

    def caffe_loss():
        return float(np.asarray(net.forward()["loss"]).ravel()[0])

    # Caffe's GradientChecker style: float32 net, step 1e-2, tolerance 1e-2
    for nm, g in zip(NAMES, analytic):
        blob = net.blobs[nm].data
        num = np.zeros_like(g)
        for idx in np.ndindex(*blob.shape):
            old = blob[idx]
            blob[idx] = old + 1e-2
            fp = caffe_loss()
            blob[idx] = old - 1e-2
            fm = caffe_loss()
            blob[idx] = old
            num[idx] = (fp - fm) / 2e-2
        np.testing.assert_allclose(g, num, rtol=1e-2, atol=1e-3, err_msg=nm)
        assert np.abs(g).max() > 0


def test_caffe_layer_stacked_bottom_equals_six_bottoms(tmp_path):
    rng = np.random.RandomState(4)
    n, k = 4, 6
    f = random_feats(rng, n, k, scale=0.4)
    six = loss_net(tmp_path, n, k)
    for nm, x in zip(NAMES, f):
        six.blobs[nm].data[...] = x
    l6 = float(np.asarray(six.forward()["loss"]).ravel()[0])
    six.backward()
    (tmp_path / "s").mkdir()
    st = loss_net(tmp_path / "s", n, k, stacked=True)
    st.blobs["f"].data[...] = np.concatenate(f)
    ls = float(np.asarray(st.forward()["loss"]).ravel()[0])
    st.backward()
    assert ls == pytest.approx(l6, rel=1e-6)
    np.testing.assert_allclose(st.blobs["f"].diff, np.concatenate([six.blobs[nm].diff for nm in NAMES]), rtol=1e-6)


def test_propagate_down_is_honoured(tmp_path):
    # Each input passes a learnable Scale layer (so it needs backward without force_backward);
    # the loss is told not to propagate to dy: its Scale must get no gradient, dx's must.
    n, k = 2, 3
    text = "".join('input: "%s" input_shape { dim: %d dim: %d }\n' % (nm, n, k) for nm in NAMES)
    for nm in NAMES:
        text += ('layer { name: "s_%s" type: "Scale" bottom: "%s" top: "s_%s" '
                 'scale_param { axis: 0 num_axes: 0 filler { type: "constant" value: 1 } } }\n' % (nm, nm, nm))
    text += ('layer { name: "loss" type: "Python" %s top: "loss" loss_weight: 1 %s '
             'python_param { module: "counting_loss" layer: "CountingLossLayer" } }\n'
             % (" ".join('bottom: "s_%s"' % nm for nm in NAMES),
                "propagate_down: true " * 5 + "propagate_down: false"))
    path = tmp_path / "pd.prototxt"
    path.write_text(text)
    net = caffe.Net(str(path), caffe.TRAIN)
    rng = np.random.RandomState(5)
    for nm, x in zip(NAMES, random_feats(rng, n, k, scale=0.3)):
        net.blobs[nm].data[...] = x
    net.forward()
    net.backward()
    assert net.params["s_dy"][0].diff.item() == 0.0
    assert net.params["s_dx"][0].diff.item() != 0.0
    assert net.params["s_t1"][0].diff.item() != 0.0


@pytest.mark.parametrize("param_str,message", [
    ('{"margin": 10}', "unknown param_str key(s) 'margin'"),
    ('{"M": -1}', "'M' must be > 0"),
    ('{"M": "ten"}', "'M' must be a number"),
    ('{M: 10}', "not valid JSON"),
])
def test_bad_param_str_is_refused_by_the_real_net(tmp_path, param_str, message):
    with pytest.raises(ParamError) as err:
        lc.parse_loss_params(param_str)
    assert message in str(err.value)
    with pytest.raises(ParamError) as err:   # the same error surfaces from caffe.Net's setup
        loss_net(tmp_path, 2, 3, param_str=param_str)
    assert message in str(err.value)


def test_mismatched_bottom_shapes_are_refused(tmp_path):
    text = "".join('input: "%s" input_shape { dim: 2 dim: %d }\n' % (nm, 4 if nm == "dx" else 3) for nm in NAMES)
    text += ('layer { name: "loss" type: "Python" %s top: "loss" loss_weight: 1 '
             'python_param { module: "counting_loss" layer: "CountingLossLayer" } }\n'
             % " ".join('bottom: "%s"' % nm for nm in NAMES))
    path = tmp_path / "bad.prototxt"
    path.write_text(text)
    with pytest.raises(Exception) as err:
        caffe.Net(str(path), caffe.TEST)
    assert "bottom 4 (phi(Dx)) has shape (2, 4)" in str(err.value)


def test_caffe_binary_prints_the_layer_error(tmp_path):
    """Under the `caffe` tool a Python exception would only show `error_already_set`:
    the layer prints its own message first."""
    import subprocess
    loss_net_text = "".join('input: "%s" input_shape { dim: 2 dim: 3 }\n' % nm for nm in NAMES)
    loss_net_text += ('layer { name: "loss" type: "Python" %s top: "loss" loss_weight: 1 '
                      'python_param { module: "counting_loss" layer: "CountingLossLayer" '
                      'param_str: \'{"margin": 3}\' } }\n' % " ".join('bottom: "%s"' % nm for nm in NAMES))
    path = tmp_path / "bad.prototxt"
    path.write_text(loss_net_text)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    res = subprocess.run([os.path.join(repo, ".venv", "bin", "caffe"), "time", "-model", str(path), "-iterations", "1"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode != 0
    assert "ERROR in Python layer CountingLossLayer.setup: ParamError" in res.stderr
    assert "unknown param_str key(s) 'margin'" in res.stderr
