"""Eq. 4: the numpy core against an independent formula, finite differences (float64),
and the Caffe Python layer inside a real caffe.Net (forward, FD gradients, propagate_down).

Tolerances (u64 = 2^-53, u32 = 2^-24; the core computes in float64 from the blobs' float32 values,
so no BLAS kernel or thread count enters and they hold on any CPU):
- numpy core vs the per-sample loop, rel 1e-12: two float64 orders of at most 6 x 7 terms differ by
  about 2 x 42 u64 of the sum of |terms|, < 1e-14 of the loss here.
- float64 central differences, step 1e-6, rtol 1e-6 / atol 1e-8: eq. 4 is quadratic in each
  feature away from the hinge's kink (the samples are placed clearly on either side), so the
  difference is the derivative up to the rounding of two loss values, ~u64 |L| / 1e-6 ~ 1e-9.
- Caffe layer vs the reference (rel 1e-5) and the diagnostics (rel 1e-5): the blobs hold float32
  copies of the float64 features (relative u32 each) and the outputs are rounded to float32: a few
  u32 of the terms, ~1e-6 of the loss at most here. Stacked vs six bottoms (rel 1e-6): the same
  float64 arithmetic on the same float32 values, then one float32 rounding (u32 = 6e-8).
- Caffe float32 finite differences, step 1e-2, rtol 1e-2 / atol 1e-3 (Caffe's GradientChecker):
  the loss's float32 rounding, u32 |L| ~ 1e-6, over the step 1e-2 is ~1e-4 at most."""
import os
import re

import numpy as np
import pytest

from conftest import numeric_grad
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


@pytest.mark.parametrize("scale", [0.3, 0.6])
def test_backward_matches_finite_differences_float64(scale):
    rng = np.random.RandomState(1)
    f = random_feats(rng, n=6, k=6, scale=scale)
    f[5] = f[5] + np.array([0, 0, 0, 3, 3, 3], float)[:, None]   # samples 3..5: phi(Dy) far, hinge off
    M = 10.0
    loss, per_sample, cache = lc.counting_loss_forward(f[:4], f[4], f[5], M)
    g_tile, g_dx, g_dy = lc.counting_loss_backward(cache, scale=1.0)
    analytic = [g_tile] * 4 + [g_dx, g_dy]
    fun = lambda: lc.counting_loss_forward(f[:4], f[4], f[5], M)[0]  # noqa: E731
    for i in range(6):
        np.testing.assert_allclose(analytic[i], numeric_grad(fun, f[i]), rtol=1e-6, atol=1e-8)
    # the hinge is active for samples 0..2 and not for 3..5, so both branches were checked
    _, _, active = cache
    s = f[0] + f[1] + f[2] + f[3]
    assert list(active) == list(((f[5] - s) ** 2).sum(1) < M) == [True] * 3 + [False] * 3


def test_hinge_inactive_gives_no_gradient_to_dy():
    rng = np.random.RandomState(2)
    f = random_feats(rng, n=3, k=4)
    f[5] = f[5] + 100.0  # |b - s|^2 >> M
    _, _, cache = lc.counting_loss_forward(f[:4], f[4], f[5], 10.0)
    _, _, g_dy = lc.counting_loss_backward(cache)
    assert np.all(g_dy == 0)


# ----------------------------------------------------------------------------- in Caffe
# Only the tests below need Caffe: without it they are skipped and the numpy tests above still run.
try:
    import caffe
except ImportError:
    caffe = None
needs_caffe = pytest.mark.skipif(caffe is None, reason="pycaffe is not importable")


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


@needs_caffe
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
        num = numeric_grad(caffe_loss, net.blobs[nm].data, eps=1e-2)
        np.testing.assert_allclose(g, num, rtol=1e-2, atol=1e-3, err_msg=nm)
        assert np.abs(g).max() > 0


@needs_caffe
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


@needs_caffe
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


@needs_caffe
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


@needs_caffe
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


@needs_caffe
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


# ----------------------------------------------------------------------------- diagnostic tops
def reference_diagnostics(feats, M):
    """Per-sample loop: mean counting term, mean hinge term, fraction active, mean |phi(Dx)|."""
    t1, t2, t3, t4, a, b = [np.asarray(f, dtype=np.float64) for f in feats]
    pos, neg, act, norm = [], [], [], []
    for i in range(len(a)):
        s = t1[i] + t2[i] + t3[i] + t4[i]
        d_neg = sum((b[i][k] - s[k]) ** 2 for k in range(len(s)))
        pos.append(sum((a[i][k] - s[k]) ** 2 for k in range(len(s))))
        neg.append(max(0.0, M - d_neg))
        act.append(1.0 if d_neg < M else 0.0)
        norm.append(sum(v * v for v in a[i]) ** 0.5)
    return dict(count_term=np.mean(pos), contrast_term=np.mean(neg), hinge_active=np.mean(act),
                norm_dx=np.mean(norm))


def mixed_hinge_feats(rng, n=8, k=5):
    """Features where about half the samples have an active hinge (M = 10)."""
    f = random_feats(rng, n, k, scale=0.5)
    f[5][::2] += 3.0          # |b - s|^2 well above M for the even samples
    return f


def test_diagnostics_match_reference_and_sum_to_the_loss():
    rng = np.random.RandomState(7)
    f = mixed_hinge_feats(rng)
    loss, _, cache = lc.counting_loss_forward(f[:4], f[4], f[5], 10.0)
    d = lc.counting_loss_diagnostics(f[4], cache, 10.0)
    ref = reference_diagnostics(f, 10.0)
    assert set(d) == set(lc.DIAGNOSTICS)
    for name in lc.DIAGNOSTICS:
        assert d[name] == pytest.approx(ref[name], rel=1e-12), name
    assert 0 < d["hinge_active"] < 1
    assert d["count_term"] + d["contrast_term"] == pytest.approx(loss, rel=1e-12)


def test_diagnostics_of_the_trivial_solution():
    z = np.zeros((4, 20))
    _, _, cache = lc.counting_loss_forward([z] * 4, z, z, 10.0)
    d = lc.counting_loss_diagnostics(z, cache, 10.0)
    assert d == dict(count_term=0.0, contrast_term=10.0, hinge_active=1.0, norm_dx=0.0)


def diag_net(tmp_path, n, k, stacked):
    """The loss layer with the four diagnostic tops at loss_weight 0, as the generator writes it."""
    net_path = loss_net(tmp_path, n, k, stacked=stacked)   # reuse the inputs, rewrite the layer's tops
    text = open(tmp_path / "loss.prototxt").read().replace(
        'top: "loss" loss_weight: 1', 'top: "loss" ' + " ".join('top: "%s"' % t for t in lc.DIAGNOSTICS)
        + " loss_weight: 1" + " loss_weight: 0" * len(lc.DIAGNOSTICS))
    del net_path
    (tmp_path / "diag.prototxt").write_text(text)
    return caffe.Net(str(tmp_path / "diag.prototxt"), caffe.TEST)


@needs_caffe
@pytest.mark.parametrize("stacked", [False, True])
def test_caffe_diagnostic_tops_match_reference_and_leave_gradients_alone(tmp_path, stacked):
    rng = np.random.RandomState(8)
    n, k = 6, 5
    f = mixed_hinge_feats(rng, n, k)
    plain = loss_net(tmp_path, n, k, stacked=stacked)
    (tmp_path / "d").mkdir()
    diag = diag_net(tmp_path / "d", n, k, stacked)
    for net in (plain, diag):
        if stacked:
            net.blobs["f"].data[...] = np.concatenate(f)
        else:
            for nm, x in zip(NAMES, f):
                net.blobs[nm].data[...] = x
        net.forward()
        net.backward()
    ref = reference_diagnostics(f, 10.0)
    for name in lc.DIAGNOSTICS:
        assert float(diag.blobs[name].data) == pytest.approx(ref[name], rel=1e-5), name
    assert float(diag.blobs["loss"].data) == pytest.approx(float(plain.blobs["loss"].data), rel=1e-6)
    for nm in (["f"] if stacked else NAMES):   # weight-0 tops: the gradients are those of the loss alone
        np.testing.assert_array_equal(diag.blobs[nm].diff, plain.blobs[nm].diff)
        assert np.abs(diag.blobs[nm].diff).max() > 0


@needs_caffe
def test_every_generated_train_val_emits_the_diagnostics():
    from caffe.proto import caffe_pb2
    from google.protobuf import text_format
    import glob
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    paths = sorted(glob.glob(os.path.join(repo, "prototxt", "**", "train_val.prototxt"), recursive=True))
    counting = 0
    for path in paths:
        net = text_format.Merge(open(path).read(), caffe_pb2.NetParameter())
        losses = [l for l in net.layer if l.type == "Python" and l.python_param.layer == "CountingLossLayer"]
        if not losses:          # e.g. prototxt/transfer/: not a counting net
            continue
        counting += 1
        (loss,) = losses
        assert list(loss.top) == ["loss"] + list(lc.DIAGNOSTICS), path
        assert list(loss.loss_weight) == [1] + [0] * len(lc.DIAGNOSTICS), path
    assert counting >= 10   # default, 7 variants, stacked, demo


def test_numpy_tests_run_without_caffe(tmp_path):
    """With pycaffe not importable, the numpy tests of this file still run (only the Caffe ones skip)."""
    import subprocess
    import sys
    here = os.path.abspath(__file__)
    code = ("import sys; sys.modules['caffe'] = None; import pytest; "
            "sys.exit(pytest.main([%r, '-q', '-rs', '-p', 'no:cacheprovider', '-k', 'not without_caffe']))" % here)
    res = subprocess.run([sys.executable, "-c", code], cwd=str(tmp_path), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    summary = res.stdout.strip().splitlines()[-1]
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|skipped|failed|error)", summary)}
    assert counts.get("passed", 0) >= 11 and counts.get("skipped", 0) >= 12 and set(counts) == {"passed", "skipped"}, summary
