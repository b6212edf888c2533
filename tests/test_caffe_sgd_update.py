"""Caffe's SGD update (momentum, L2 weight decay, lr_mult / decay_mult per parameter) against the
formula, in whichever build is installed, and the speed patch's fused one-pass CPU update
(tools/caffe/patches/speed/0203) against the stock passes of the same build (CAFFE_FUSED_SGD=0).
Per element both compute
    g = diff + local_decay * data;  h = local_rate * g + momentum * h;  diff = h;  data -= h
and may differ only where one side rounds a multiply-add once (a fused BLAS kernel) and the
other twice: ULPS units in the last place (of the value, plus of the blob's largest value). Two updates are applied, so that the second reads
the first one's history (and the diff it leaves behind, which is h in stock Caffe)."""
import numpy as np
import pytest

caffe = pytest.importorskip("caffe")
from caffe import layers as L  # noqa: E402

BASE_LR, MOMENTUM, DECAY = 0.01, 0.9, 5e-4
ULPS = 2


def _solver(tmp_path):
    n = caffe.NetSpec()
    n.data, n.target = L.Input(shape=[dict(dim=[2, 300]), dict(dim=[2, 7])], ntop=2)
    # fc1: 90,000 weights, above the fused loop's threading threshold (2^16)
    n.fc1 = L.InnerProduct(n.data, num_output=300, weight_filler=dict(type="gaussian", std=0.1),
                           bias_filler=dict(type="constant", value=0.1),
                           param=[dict(lr_mult=1, decay_mult=1), dict(lr_mult=2, decay_mult=0)])
    n.fc2 = L.InnerProduct(n.fc1, num_output=7, weight_filler=dict(type="gaussian", std=0.1),
                           param=[dict(lr_mult=0.5, decay_mult=3), dict(lr_mult=0, decay_mult=0)])
    n.loss = L.EuclideanLoss(n.fc2, n.target)
    net = tmp_path / "net.prototxt"
    net.write_text(str(n.to_proto()))
    solver = tmp_path / "solver.prototxt"
    solver.write_text('net: "%s"\nbase_lr: %g\nlr_policy: "fixed"\nmomentum: %g\nweight_decay: %g\n'
                      'max_iter: 10\nsnapshot_prefix: "%s"\nsolver_mode: CPU\n'
                      % (net, BASE_LR, MOMENTUM, DECAY, tmp_path / "snap"))
    return caffe.SGDSolver(str(solver))


MULTS = {"fc1": [(1, 1), (2, 0)], "fc2": [(0.5, 3), (0, 0)]}   # (lr_mult, decay_mult) per blob


def _two_updates(tmp_path, monkeypatch, fused, threads):
    monkeypatch.setenv("CAFFE_FUSED_SGD", fused)
    monkeypatch.setenv("CAFFE_CPU_THREADS", str(threads))
    solver = _solver(tmp_path)
    rng = np.random.default_rng(5)
    start, grads, after = {}, {}, []
    for name, blobs in solver.net.params.items():
        for i, blob in enumerate(blobs):
            blob.data[...] = rng.standard_normal(blob.data.shape).astype(np.float32)
            start[name, i] = blob.data.copy()
            grads[name, i] = rng.standard_normal(blob.data.shape).astype(np.float32)
    for step in range(2):
        if step == 0:
            for (name, i), g in grads.items():
                solver.net.params[name][i].diff[...] = g
        solver.apply_update()
        after.append({(name, i): (blob.data.copy(), blob.diff.copy())
                      for name, blobs in solver.net.params.items() for i, blob in enumerate(blobs)})
    return start, grads, after


def _reference(start, grads):
    """The two updates in float64; the second one's gradient is what the first left in diff (h)."""
    out = []
    data = {k: v.astype(np.float64) for k, v in start.items()}
    hist = {k: np.zeros_like(v) for k, v in data.items()}
    diff = {k: v.astype(np.float64) for k, v in grads.items()}
    for _ in range(2):
        for (name, i) in data:
            lr_mult, decay_mult = MULTS[name][i]
            g = diff[name, i] + DECAY * decay_mult * data[name, i]
            hist[name, i] = BASE_LR * lr_mult * g + MOMENTUM * hist[name, i]
            diff[name, i] = hist[name, i].copy()
            data[name, i] = data[name, i] - hist[name, i]
        out.append({k: (data[k].copy(), diff[k].copy()) for k in data})
    return out


@pytest.mark.parametrize("fused,threads", [("0", 1), ("1", 1), ("1", 2)])
def test_sgd_update_follows_the_formula(tmp_path, monkeypatch, fused, threads):
    start, grads, after = _two_updates(tmp_path, monkeypatch, fused, threads)
    ref = _reference(start, grads)
    for step in range(2):
        for key, (data, diff) in after[step].items():
            want_data, want_diff = ref[step][key]
            # float32 against float64, per element: g (2 roundings), h (3), data - h (1), so about
            # 6 u32 (u32 = 6e-8) of |data| plus 3 u32 of |lr g| + |momentum h| (<= 0.1 here); no sum
            # over elements, so no kernel or thread count enters
            assert np.allclose(data, want_data, rtol=1e-6, atol=1e-7), (step, key)
            assert np.allclose(diff, want_diff, rtol=1e-5, atol=1e-9), (step, key)
    # lr_mult 0: the fc2 bias never moves; decay_mult 0 with lr_mult 2: the fc1 bias moves by the gradient only
    assert np.array_equal(after[1]["fc2", 1][0], start["fc2", 1])


def test_fused_update_matches_the_stock_passes(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _, _, stock = _two_updates(tmp_path / "a", monkeypatch, "0", 1)
    _, _, fused = _two_updates(tmp_path / "b", monkeypatch, "1", 2)
    for step in range(2):
        for key, (data, diff) in stock[step].items():
            for a, b in ((data, fused[step][key][0]), (diff, fused[step][key][1])):
                # ulps of each value, plus ulps of the blob's scale (where an update nearly cancels a
                # weight, a last-bit change of an operand is many ulps of the small result)
                ulp = np.spacing(np.maximum(np.abs(a), np.abs(b)).astype(np.float32)) + \
                    np.spacing(np.float32(np.abs(a).max()))
                assert np.all(np.abs(a - b) <= ULPS * ulp), (step, key, np.max(np.abs(a - b) / ulp))
