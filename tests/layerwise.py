"""Layer-by-layer comparison of two Caffe nets of one prototxt that sum in different orders
(the serial and the batch-parallel path of the speed patch, im2col+GEMM and oneDNN, two BLAS
kernels), with tolerances that follow from the float32 arithmetic of each layer.

Why layer by layer. Comparing two whole forward/backward passes asserts something that is not
true in general: max pooling picks the largest value of each window, and where two values of a
window are within a rounding error of each other (ReLU zeros next to tiny positives, near-ties),
a last-bit change upstream moves the argmax and with it the whole gradient of that window to
another cell. Every layer below it then differs by percents although both passes are right.
So each layer of the tested net is run on exactly the inputs the reference layer saw (its
bottoms, and in backward its top diffs, the data it reads and the parameter diffs it adds to,
copied from the reference net), and only that layer's own outputs are compared. With equal
inputs max pooling selects the same cells in both nets and everything that remains is
summation order, which is bounded:

  A sum of K terms t_i evaluated in float32 in any order (and with or without fused
  multiply-adds) is within gamma_K * sum |t_i| of the exact sum, gamma_K = K u / (1 - K u),
  u = 2^-24 (Higham, Accuracy and Stability of Numerical Algorithms, 2nd ed., eq. 3.5). Two
  evaluations differ by at most 2 gamma_K sum |t_i|.

sum |t_i| is measured elementwise by a third net (the magnitude net, serial path) running the
same layer on absolute values: |W| * |x| + |b| for a convolution's or inner product's forward,
|W|^T * |dy| for its input gradient, |x| * |dy| + |old diff| for its weight gradient, |dy|
summed for a bias, |dy| routed through the same max-pooling windows. Its own float32 rounding
(relative gamma_K, all terms positive) is covered by the 1 / (1 - gamma_K) factor. K per output:
  Convolution / InnerProduct forward: fan-in + 1 (bias); input gradient: C_out/group * kh * kw
  (InnerProduct: N_out); weight and bias gradient: top count / C_out (images x output pixels,
  InnerProduct: rows) + 1 (the diff it adds to);
  Pooling MAX backward, AVE both ways: kh * kw; Split backward: its number of tops;
  EuclideanLoss forward: its element count + 2.
Flush-to-zero of denormal products adds at most FLT_MIN per term: K * 2^-126 absolute.
LRN (across channels) is bounded in LRN_BOUND's docstring. Layers that only select, copy or
apply one rounded operation per element (max-pool forward, ReLU, Concat, Flatten, Reshape,
Slice, Split forward, EuclideanLoss backward, Python layers: the same numpy code on identical
inputs) must be bit-identical; a layer type without a rule here is compared bit for bit too.

What is still caught: each layer must get the same result as the reference from the same inputs,
so a wrong cell, a lost image, a dropped or overwritten (not accumulated) parameter gradient, an
off-by-one in im2col/col2im all show up at the layer that makes them. A layer that writes into a
blob it does not own is caught too: before a blob is read, the tested net's copy must still be
exactly what was last written into it (tests/test_caffe_parallel.py keeps planted bugs of each
kind as tests)."""
import contextlib
import os

import numpy as np

U = 2.0 ** -24
TINY = float(np.finfo(np.float32).tiny)


def gamma(k):
    """gamma_k = k u / (1 - k u): the relative bound of a k-term float32 sum in any order."""
    ku = k * U
    if ku >= 0.5:
        raise ValueError("sum of %d float32 terms: no useful bound (k u >= 1/2)" % k)
    return ku / (1.0 - ku)


def sum_bound(k, magnitude):
    """Largest |a - b| between two float32 evaluations of a k-term sum whose terms' absolute
    values add up to ``magnitude`` (elementwise; computed in float32, hence the extra factor)."""
    g = gamma(k)
    # float32 result: its own rounding (relative u) is covered by the (1 + 4u)
    return (np.float32(2.0 * g / (1.0 - g) * (1 + 4 * U)) * np.asarray(magnitude, np.float32)
            + np.float32(2.0 * k * TINY))


@contextlib.contextmanager
def environ(values):
    """os.environ updated with ``values`` (None removes a variable) for the block, then restored.
    The patched Caffe reads CAFFE_CPU_THREADS / CAFFE_CONV_BATCH at every call."""
    old = {k: os.environ.get(k) for k in values}
    try:
        for k, v in values.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = str(v)
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class Side:
    """A caffe.Net of ``path`` (TRAIN) made and run under its own environment variables."""

    def __init__(self, path, env, seed=1):
        import caffe
        self.env = dict(env)
        with environ(self.env):
            caffe.set_mode_cpu()
            caffe.set_random_seed(seed)
            self.net = caffe.Net(str(path), caffe.TRAIN)

    def forward(self, i):
        with environ(self.env):
            self.net._forward(i, i)

    def backward(self, i):
        with environ(self.env):
            self.net._backward(i, i)


def layer_params(path):
    """{layer name: LayerParameter} of the prototxt at ``path``."""
    from caffe.proto import caffe_pb2
    from google.protobuf import text_format
    net = caffe_pb2.NetParameter()
    with open(str(path)) as f:
        text_format.Merge(f.read(), net)
    return {layer.name: layer for layer in net.layer}


def LRN_BOUND(lp, x, y, dy=None):
    """Bound of |a - b| for LRN across channels (Caffe's CPU code; per image, float32) from its
    inputs, in float64. Forward: scale_c = k + alpha/n * S_c, S_c the sum of x^2 over the n
    channels around c, kept as a running sum over the channels (add one, subtract one): each of
    its at most 2C + n roundings is below u times a partial sum, and every partial sum is at most
    A = k + alpha/n * sum over all channels of x^2. So two evaluations of scale differ by
    ds <= 2 (2C + n) u A. y = x * scale^-beta (pow and a product: 2 roundings each, plus beta
    times the relative change of scale): |dy_out| <= |y| (beta ds / scale + 4u).
    Backward: bottom_diff = dy scale^-beta - (2 alpha beta / n) x R_c, R_c the running sum over n
    channels of r = dy * y / scale. The first term as in forward (2 more roundings); r is a
    product and a quotient of values known to within ds / scale relatively, so its running sum
    differs by at most ((2 (2C + n) + 4) u + ds / scale) summed over all channels of |r|; the
    final multiply-add: 2 roundings of its two terms."""
    p = lp.lrn_param
    if p.norm_region != 0:
        raise NotImplementedError("LRN WITHIN_CHANNEL has no bound here")
    n, alpha, beta, k = p.local_size, p.alpha, p.beta, p.k
    x = x.astype(np.float64)
    c = x.shape[1]
    sq = x * x
    pre = (n - 1) // 2
    padded = np.zeros((x.shape[0], c + n - 1) + x.shape[2:])
    padded[:, pre:pre + c] = sq
    window = sum(padded[:, i:i + c] for i in range(n))
    scale = k + alpha / n * window
    big_a = k + alpha / n * sq.sum(axis=1, keepdims=True)
    ds_rel = 2 * (2 * c + n) * U * big_a / scale
    if dy is None:
        return np.abs(y) * (beta * ds_rel + 4 * U)
    dy = dy.astype(np.float64)
    y = y.astype(np.float64)
    t1 = np.abs(dy) * scale ** -beta
    r = np.abs(dy * y / scale)
    cache = 2.0 * alpha * beta / n
    r_all = r.sum(axis=1, keepdims=True)
    t2 = cache * np.abs(x) * r_all
    return t1 * (beta * ds_rel + 4 * U) + t2 * ((2 * (2 * c + n) + 4) * U + ds_rel) + 2 * U * (t1 + t2)


class Report:
    """Outcome of compare(): failures (text lines), checks made, the largest |a - b| / bound seen
    where a bound applies (how much of the bound the real differences use), and how many
    compared arrays were not bit-identical."""

    def __init__(self):
        self.failures = []
        self.checks = 0
        self.worst = 0.0
        self.worst_at = None
        self.inexact = 0

    def check(self, what, test, ref, bound=None):
        """|test - ref| <= bound elementwise (bound None: bit-identical). The difference is taken in
        float32 (one more rounding, relative u: far inside the 2 gamma_K of any bound)."""
        self.checks += 1
        test, ref = np.asarray(test), np.asarray(ref)
        if test.shape != ref.shape:
            self.failures.append("%s: shape %s != %s" % (what, test.shape, ref.shape))
            return
        diff = np.abs(test - ref)
        if not diff.any() and not np.isnan(diff).any():
            return
        self.inexact += 1
        if bound is None:
            bound = np.zeros((), np.float32)
        bound = np.asarray(bound, np.float32)
        bad = ~(diff <= bound)
        if bad.any():
            idx = tuple(int(i) for i in np.argwhere(bad)[0])
            b = float(np.broadcast_to(bound, diff.shape)[idx])
            self.failures.append("%s: %d of %d values beyond the bound, first at %s: %r vs %r (|diff| %.3g, bound %.3g%s)"
                                 % (what, int(bad.sum()), bad.size, idx, float(test[idx]), float(ref[idx]),
                                    float(diff[idx]), b, ": must be bit-identical" if b == 0 else ""))
            return
        with np.errstate(divide="ignore", invalid="ignore"):
            r = float(np.max(np.where(diff > 0, diff / bound, 0)))
        if r > self.worst:
            self.worst, self.worst_at = r, what

    def __str__(self):
        head = "%d checks, %d not bit-identical, largest |diff|/bound %.3g (%s)" % (
            self.checks, self.inexact, self.worst, self.worst_at)
        return "\n".join([head] + self.failures[:20])


def _linear_k(lp, layer, top_count, weight_shape):
    """(K forward, K input gradient, K parameter gradient) of a Convolution or InnerProduct."""
    out = weight_shape[0]
    fan_in = int(np.prod(weight_shape[1:]))
    if layer.type == "InnerProduct":
        return fan_in + 1, out, top_count // out + 1
    group = lp.convolution_param.group or 1
    kernel = int(np.prod(weight_shape[2:]))
    return fan_in + 1, out // group * kernel, top_count // out + 1


def compare(path, ref_env, test_env, inputs, weights_from=None, corrupt=None, seed=1):
    """Run the net at ``path`` once forward and once backward in a reference net (ref_env) and a
    tested net (test_env), layer by layer, each tested layer on the reference layer's inputs.

    inputs: {blob name: values} set in both nets. weights_from: a caffe.Net whose parameters both
    nets take (default: the reference net's fillers under ``seed``). corrupt(phase, layer name,
    net): called on the tested net right after its layer ran (phase "forward", "backward") or
    just before its backward ("backward_pre"): planted bugs. Returns (Report, reference net,
    tested net)."""
    lps = layer_params(path)
    ref = Side(path, ref_env, seed)
    test = Side(path, test_env, seed)
    mag = Side(path, ref_env, seed)
    src = weights_from if weights_from is not None else ref.net
    for net in (ref.net, test.net, mag.net):
        for name, blobs in src.params.items():
            for k, b in enumerate(blobs):
                net.params[name][k].data[...] = b.data
    for name, values in inputs.items():
        ref.net.blobs[name].data[...] = values
        test.net.blobs[name].data[...] = values
    rn, tn, mn = ref.net, test.net, mag.net
    names = list(rn._layer_names)
    report = Report()
    last = {}   # blob -> what the tested net last wrote (or was given) there

    def take(blob, field):
        """Check the tested net's blob is untouched since it was last written, then give it the
        reference's values."""
        t = getattr(tn.blobs[blob], field)
        key = (blob, field)
        if key in last and not np.array_equal(t, last[key]):
            report.failures.append("%s of blob %s changed by a layer that does not write it" % (field, blob))
        t[...] = getattr(rn.blobs[blob], field)
        last[key] = t.copy()

    # ---------------------------------------------------------------- forward
    for i, name in enumerate(names):
        layer = rn.layers[i]
        bottoms, tops = rn.bottom_names[name], rn.top_names[name]
        for b in bottoms:
            take(b, "data")
        ref.forward(i)
        test.forward(i)
        if corrupt:
            corrupt("forward", name, tn)
        for t in tops:
            last[(t, "data")] = tn.blobs[t].data.copy()
        if layer.type == "Input":
            continue
        lp = lps.get(name)
        for t in tops:
            bound = None
            what = "forward %s (%s) top %s" % (name, layer.type, t)
            if layer.type in ("Convolution", "InnerProduct"):
                w = rn.params[name][0].data
                kf, _, _ = _linear_k(lp, layer, rn.blobs[t].count, w.shape)
                for b in bottoms:
                    mn.blobs[b].data[...] = np.abs(rn.blobs[b].data)
                for k, pb in enumerate(rn.params[name]):
                    mn.params[name][k].data[...] = np.abs(pb.data)
                mag.forward(i)
                bound = sum_bound(kf, mn.blobs[t].data)
            elif layer.type == "Pooling" and lp.pooling_param.pool == 1:   # AVE
                kh, kw = _pool_kernel(lp, rn.blobs[bottoms[0]].data.shape)
                mn.blobs[bottoms[0]].data[...] = np.abs(rn.blobs[bottoms[0]].data)
                mag.forward(i)
                bound = sum_bound(kh * kw + 1, mn.blobs[t].data)
            elif layer.type == "LRN":
                bound = LRN_BOUND(lp, rn.blobs[bottoms[0]].data, rn.blobs[t].data)
            elif layer.type == "EuclideanLoss":
                bound = sum_bound(rn.blobs[bottoms[0]].count + 2, np.abs(rn.blobs[t].data))
            # else (max-pool forward, Split, ReLU, Concat, Python, a type without a rule): bit for bit
            report.check(what, tn.blobs[t].data, rn.blobs[t].data, bound)
            tn.blobs[t].data[...] = rn.blobs[t].data   # the next layers read the reference's values
            last[(t, "data")] = tn.blobs[t].data.copy()

    # ---------------------------------------------------------------- backward
    for i in reversed(range(len(names))):
        name = names[i]
        layer = rn.layers[i]
        if layer.type == "Input":
            continue
        bottoms, tops = rn.bottom_names[name], rn.top_names[name]
        for t in tops:
            take(t, "diff")
        for b in list(dict.fromkeys(bottoms + tops)):
            take(b, "data")
            if b not in tops:
                tn.blobs[b].diff[...] = rn.blobs[b].diff
                last[(b, "diff")] = tn.blobs[b].diff.copy()
        prior = []
        for k, pb in enumerate(rn.params.get(name, [])):
            tn.params[name][k].diff[...] = pb.diff
            prior.append(pb.diff.copy())
        if corrupt:
            corrupt("backward_pre", name, tn)
        ref.backward(i)
        test.backward(i)
        if corrupt:
            corrupt("backward", name, tn)
        lp = lps.get(name)
        bounds, pbounds = {}, {}
        if layer.type in ("Convolution", "InnerProduct"):
            w = rn.params[name][0].data
            _, ki, kp = _linear_k(lp, layer, rn.blobs[tops[0]].count, w.shape)
            for t in tops:
                mn.blobs[t].diff[...] = np.abs(rn.blobs[t].diff)
            for b in bottoms:
                mn.blobs[b].data[...] = np.abs(rn.blobs[b].data)
            for k, pb in enumerate(rn.params[name]):
                mn.params[name][k].data[...] = np.abs(pb.data)
                mn.params[name][k].diff[...] = np.abs(prior[k])
            mag.backward(i)
            for b in bottoms:
                bounds[b] = sum_bound(ki, mn.blobs[b].diff)
            for k in range(len(prior)):
                pbounds[k] = sum_bound(kp, mn.params[name][k].diff)
        elif layer.type == "Pooling":
            kh, kw = _pool_kernel(lp, rn.blobs[bottoms[0]].data.shape)
            mn.blobs[bottoms[0]].data[...] = rn.blobs[bottoms[0]].data   # the same windows' argmax
            mag.forward(i)
            mn.blobs[tops[0]].diff[...] = np.abs(rn.blobs[tops[0]].diff)
            mag.backward(i)
            bounds[bottoms[0]] = sum_bound(kh * kw, mn.blobs[bottoms[0]].diff)
        elif layer.type == "LRN":
            bounds[bottoms[0]] = LRN_BOUND(lp, rn.blobs[bottoms[0]].data, rn.blobs[tops[0]].data,
                                           rn.blobs[tops[0]].diff)
        elif layer.type == "Split":
            bounds[bottoms[0]] = sum_bound(len(tops), sum(np.abs(rn.blobs[t].diff) for t in tops))
        for b in dict.fromkeys(bottoms):
            report.check("backward %s (%s) bottom diff %s" % (name, layer.type, b),
                         tn.blobs[b].diff, rn.blobs[b].diff, bounds.get(b))
            tn.blobs[b].diff[...] = rn.blobs[b].diff
            last[(b, "diff")] = tn.blobs[b].diff.copy()
        for k, pb in enumerate(rn.params.get(name, [])):
            report.check("backward %s (%s) param %d diff" % (name, layer.type, k),
                         tn.params[name][k].diff, pb.diff, pbounds.get(k))
            tn.params[name][k].diff[...] = pb.diff
    return report, rn, tn


def _pool_kernel(lp, bottom_shape):
    p = lp.pooling_param
    if p.global_pooling:
        return bottom_shape[2], bottom_shape[3]
    if p.HasField("kernel_h"):
        return p.kernel_h, p.kernel_w
    return p.kernel_size, p.kernel_size


# ----------------------------------------------------------------------------- planted bugs
def plant(kind, layer, rng_seed=0):
    """A corrupt() hook for compare(): a plausible bug of the tested path in ``layer``.
      pool_route   max-pool backward sends one window's gradient to the neighbouring cell
      bias_dropped a convolution's bias gradient is not added (the diff keeps its old value)
      overwrite    a parameter gradient is written instead of added to the diff
      stale_image  the forward output of the last image is left at zero (a thread's share skipped)
      col_shift    an input gradient is shifted by one pixel (an off-by-one in col2im)"""
    state = {}

    def hook(phase, name, net):
        if name != layer:
            return
        if kind == "pool_route" and phase == "backward":
            bottom = net.bottom_names[name][0]
            d = net.blobs[bottom].diff
            nz = np.argwhere(d[0] != 0)
            assert len(nz), "no gradient reaches %s" % bottom
            c, h, w = nz[len(nz) // 2]
            w2 = w + 1 if w + 1 < d.shape[3] else w - 1
            d[0, c, h, w2] += d[0, c, h, w]
            d[0, c, h, w] = 0
        elif kind in ("bias_dropped", "overwrite") and phase == "backward_pre":
            state["prior"] = [b.diff.copy() for b in net.params[name]]
        elif kind == "bias_dropped" and phase == "backward":
            net.params[name][1].diff[...] = state["prior"][1]
        elif kind == "overwrite" and phase == "backward":
            net.params[name][0].diff[...] -= state["prior"][0]
        elif kind == "stale_image" and phase == "forward":
            net.blobs[net.top_names[name][0]].data[-1] = 0
        elif kind == "col_shift" and phase == "backward":
            d = net.blobs[net.bottom_names[name][0]].diff
            d[...] = np.roll(d, 1, axis=-1)
    return hook
