#!/usr/bin/env python
"""Benchmark one SGD iteration (forward + backward + update) of the counting net on the CPU.

Rows, each in a child process of its own (so that BLAS settings differ per row and the
row's peak RSS is its own):
  caffe six      the faithful six-branch siamese net (tools/make_prototxt.py), Input blobs
                 filled with random normalised data (data layer excluded)
  caffe stacked  one trunk on the six inputs stacked along the batch axis (same loss)
  caffe plain    the same trunk on the same 6N images with a trivial C++ loss (Reduction MEAN):
                 the plain network, to price the counting loss and the data layer
  caffe six+data / stacked+data   the real training net: counting data layer on an LMDB
                 (time inside the data layer's forward = solver wait on data)
  torch stacked / torch six / torch plain   the same network (CaffeNet body, groups, LRN,
                 ceil-mode pooling), loss (eq. 4) and SGD (momentum 0.9, weight decay 5e-4 on
                 weights, lr x2 and no decay on biases) in PyTorch on the CPU: the peer
  gemm           sgemm rate of the BLAS library that pycaffe links (found with ldd), in the
                 same process environment as the Caffe rows: the practical limit
FLOPs per step: 2 x multiply-adds of every conv / fc layer, x3 for forward, weight and
input gradients (x2 for conv1, which computes no input gradient).

BLAS settings (--blas, one or more): default, threads1, skylakex, skylakex1, openmp,
openmp-skylakex (see bench/benchlib.py blas_env: OPENBLAS_CORETYPE / OPENBLAS_NUM_THREADS /
LD_LIBRARY_PATH to the OpenMP flavour); unavailable ones are skipped with the reason.

PyTorch is used only here, from bench/.venv-torch (git-ignored) if present, else from the
project's .venv (`make extras` installs the CPU build there); if it is missing the torch rows are
skipped and the install command is printed.

What ran: the header names the CPU (model and vendor) and, per Caffe build and oneDNN ISA cap,
the OpenBLAS core and what oneDNN reported under ONEDNN_VERBOSE=1 for a small convolution (its
version, the ISA it dispatched, the convolution implementation), and the same for PyTorch's
bundled oneDNN; the CSV repeats them per row. --isa AVX2 AVX512_CORE runs every row once per
ONEDNN_MAX_CPU_ISA cap, Caffe and PyTorch alike, interleaved (ratios pair rows of one cap).

Caffe builds (--caffe-builds LABEL=PREFIX ...): the Caffe rows run once per build, with that
install's pycaffe and libcaffe (PYTHONPATH / LD_LIBRARY_PATH); 'x stock' is images/s over the
row of the build labelled 'stock'. LABEL=venv is the build the venv uses. LABEL=PREFIX,VAR=VALUE,...
sets variables for that build's rows only, e.g. perimage=venv,CAFFE_CONV_BATCH=1 (one GEMM per image).
'x torch' is images/s over PyTorch's stacked row (its faster layout of the same net and loss);
'x torch same layout' over PyTorch's row of the same layout.

--profile: instead, where the time of one training step goes, per layer kind, from Caffe's
per-layer callbacks inside solver.step (conv forward, conv weight+bias gradient, conv input
gradient, LRN, pooling, ReLU, fc, loss, the rest = update, split/concat, Python overhead), and
the same net in PyTorch under torch.profiler (op self times, grouped the same way).

Examples:
  python bench/train_step.py                                   # demo batch 16 + batch 64
  python bench/train_step.py --batches 16 --blas default skylakex --layouts six stacked plain
  python bench/train_step.py --memory                          # peak RSS at batch 256 and 16
  python bench/train_step.py --blas auto --caffe-builds patched=venv stock=~/.cache/learning-to-count/caffe-KEY
  python bench/train_step.py --profile --blas auto auto1 --torch-threads 2 1 --caffe-builds patched=venv stock=PREFIX
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time

from bench import benchlib
from ltc import machine, params

LAYOUTS = ("six", "stacked", "plain")


# ============================================================================ child: caffe
def _caffe_net_files(layout, batch, inputs, lmdb, workers, folder, dim=1000):
    """Write the train net and its solver into folder; returns the solver path."""
    import caffe
    from caffe import layers as L, params as P
    from ltc import nets

    cfg = dict(nets.DEFAULTS, batch=batch, layout="stacked" if layout == "plain" else layout, dim=dim,
               train_lmdb=lmdb or "unused", val_lmdb=lmdb or "unused", workers=workers,
               prefetch=max(nets.DEFAULTS["prefetch"], workers + 2), snapshot_prefix=os.path.join(folder, "snap"))
    if layout == "plain":
        if inputs != "input":
            raise SystemExit("the plain trunk row runs on Input blobs only")
        n = caffe.NetSpec()
        n.data = L.Input(shape=dict(dim=[6 * batch, 3, 114, 114]))
        fc8 = nets.branch(n, n.data, "", dim, cfg["filler"])
        n.loss = L.Reduction(fc8, operation=P.Reduction.MEAN, loss_weight=1)
        net = n.to_proto()
        net.name = "plain_trunk"
    else:
        net = nets.counting_net(cfg, inputs=inputs)
    net_path = os.path.join(folder, "train.prototxt")
    return benchlib.write_timing_files(net, cfg, net_path, os.path.join(folder, "solver.prototxt"), max_iter=10 ** 8)


class _Timed:
    """Wraps a Python layer's forward/backward (looked up per call by Caffe) with a clock."""

    def __init__(self, layer, names=("forward", "backward")):
        self.total = 0.0
        for name in names:
            orig = getattr(layer, name)
            setattr(layer, name, self._wrap(orig))

    def _wrap(self, fn):
        def timed(*a):
            t = time.perf_counter()
            try:
                return fn(*a)
            finally:
                self.total += time.perf_counter() - t
        return timed


def _parse_variants(text):
    """"six:input:0,stacked:data_layer:1" -> [(layout, inputs, workers), ...]"""
    out = []
    for item in text.split(","):
        layout, inputs, workers = item.split(":")
        out.append((layout, inputs, int(workers)))
    return out


def child_caffe(a):
    """Build one solver per variant, then step them round-robin (one step each per round) so that
    load changes on the shared machine hit every variant alike; sgemm is timed once per round too."""
    import gc
    import numpy as np
    import caffe
    caffe.set_mode_cpu()
    lib = machine.caffe_blas_library()
    variants = []
    tmp = tempfile.TemporaryDirectory()
    for i, (layout, inputs, workers) in enumerate(_parse_variants(a.variants)):
        caffe.set_random_seed(1701)
        folder = os.path.join(tmp.name, str(i))
        os.makedirs(folder)
        solver_path = _caffe_net_files(layout, a.batch, inputs, a.lmdb, workers, folder)
        t = time.perf_counter()
        solver = caffe.SGDSolver(solver_path)
        v = dict(layout=layout, inputs=inputs, workers=workers, solver=solver, setup_s=time.perf_counter() - t,
                 times=[], data=None, loss=None)
        net = solver.net
        if inputs == "input":
            rng = np.random.default_rng(0)
            for name in (["data"] if layout in ("stacked", "plain") else ["t1", "t2", "t3", "t4", "dx", "dy"]):
                blob = net.blobs[name].data
                blob[...] = rng.standard_normal(blob.shape, dtype=np.float32)
        for name, layer in zip(net._layer_names, net.layers):
            if layer.type == "Python" and name == "data":
                v["data"] = _Timed(layer, ("forward",))
                v["data_layer"] = layer
            elif layer.type == "Python" and name == "loss":
                v["loss"] = _Timed(layer)
        variants.append(v)
    for v in variants:
        for _ in range(a.warmup):
            v["solver"].step(1)
        for timer in (v["data"], v["loss"]):
            if timer:
                timer.total = 0.0
    gemm = []
    for _ in range(a.iters):
        for v in variants:
            t = time.perf_counter()
            v["solver"].step(1)
            v["times"].append(time.perf_counter() - t)
        if a.gemm:
            gemm.append(benchlib.sgemm_gflops(lib, reps=1))
    _, core, threads = machine.blas_info(lib)
    out = []
    for v in variants:
        net = v["solver"].net
        loss = float(np.asarray(net.blobs["loss"].data).ravel()[0])
        if not np.isfinite(loss):
            raise SystemExit("%s/%s: loss is not finite: %r" % (v["layout"], v["inputs"], loss))
        macs = benchlib.net_macs(net)
        r = dict(kind="caffe", layout=v["layout"], inputs=v["inputs"], workers=v["workers"], batch=a.batch,
                 times=v["times"], loss=loss, flops=benchlib.train_flops(macs), setup_s=v["setup_s"],
                 fwd_macs_per_image=sum(m for _, m in macs.values()) / (6 * a.batch))
        if v["data"]:
            r["data_s"] = v["data"].total / len(v["times"])
        if v["loss"]:
            r["loss_s"] = v["loss"].total / len(v["times"])
        out.append(r)
    for v in variants:  # stop and reap the data-layer workers (their peak RSS then shows in RUSAGE_CHILDREN)
        if v.get("data_layer") is not None and hasattr(v["data_layer"], "close"):
            v["data_layer"].close()
        v.pop("data_layer", None)
        v.pop("solver")
    gc.collect()
    benchlib.child_print(dict(variants=out, gemm_gflops=statistics.median(gemm) if gemm else None,
                        blas_lib=lib, blas_core=core, blas_threads=threads))


def child_gemm(a):
    lib = machine.caffe_blas_library()
    _, core, threads = machine.blas_info(lib)
    # 2048^3: the limit; then Caffe's per-image conv GEMMs (forward, one per image and group) next to
    # the same GEMM over a batch of 96 images (what a batched im2col would run), and fc6 at 96 rows
    shapes = [(2048, 2048, 2048), (96, 676, 363), (96, 676 * 96, 363), (128, 169, 1200), (128, 169 * 96, 1200),
              (384, 36, 2304), (384, 36 * 96, 2304), (128, 36, 1728), (128, 36 * 96, 1728), (96, 4096, 2304),
              (384, 2304, 36), (2304, 36, 384)]
    res = dict(kind="gemm", blas_lib=lib, blas_core=core, blas_threads=threads)
    for m, n, k in shapes:
        res["gemm_%dx%dx%d" % (m, n, k)] = benchlib.sgemm_gflops(lib, m, n, k, reps=5)
    res["gemm_gflops"] = res["gemm_2048x2048x2048"]
    benchlib.child_print(res)


# ============================================================================ --profile
PROFILE_COLUMNS = [("conv_fwd", "conv fwd"), ("conv_wgrad", "conv wgrad"), ("conv_igrad", "conv igrad"),
                   ("conv_bwd", "conv bwd"), ("lrn", "LRN"), ("pool", "pool"), ("relu", "ReLU"), ("fc", "fc"),
                   ("loss", "loss"), ("data", "data"), ("other", "rest")]
_CAFFE_KIND = {"Convolution": "conv", "LRN": "lrn", "Pooling": "pool", "ReLU": "relu", "InnerProduct": "fc"}


class _LayerClock:
    """Per-layer forward/backward seconds of one step, from Caffe's own layer callbacks."""

    def __init__(self, net):
        self.n = len(net.layers)
        self.fwd, self.bwd = [0.0] * self.n, [0.0] * self.n
        self.t0 = 0.0
        net.before_forward(self._start)
        net.after_forward(lambda i: self._stop(self.fwd, i))
        net.before_backward(self._start)
        net.after_backward(lambda i: self._stop(self.bwd, i))

    def _start(self, i):
        self.t0 = time.perf_counter()

    def _stop(self, acc, i):
        acc[i] += time.perf_counter() - self.t0

    def reset(self):
        self.fwd, self.bwd = [0.0] * self.n, [0.0] * self.n


def _caffe_kinds(net):
    kinds = []
    for name, layer in zip(net._layer_names, net.layers):
        if layer.type == "Python":
            kinds.append("data" if name == "data" else "loss" if name == "loss" else "other")
        else:
            kinds.append(_CAFFE_KIND.get(layer.type, "other"))
    return kinds


def no_conv_input_grad_net(net):
    """A copy of a NetParameter whose Convolution layers compute their weight and bias gradients
    but no input gradient: propagate_down: false on each, plus a Reduction (SUM, loss_weight 1) on
    every conv bottom that a layer produces. Without that second part Caffe would prune the whole
    backward pass below the top convolution (nothing else needs those blobs' gradients), and only
    the top conv's weight gradient would be timed."""
    from caffe.proto import caffe_pb2
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net)
    inputs = set(out.input)
    for layer in out.layer:
        if layer.type in ("Input", "Data", "DummyData") or (layer.type == "Python" and layer.name == "data"):
            inputs.update(layer.top)
    kept = []
    for layer in out.layer:
        if layer.type == "Convolution":
            del layer.propagate_down[:]
            layer.propagate_down.extend([False] * len(layer.bottom))
            kept.extend(b for b in layer.bottom if b not in inputs and b not in kept)
    for blob in kept:
        keep = out.layer.add()
        keep.name, keep.type = "wgrad_keep_" + blob, "Reduction"
        keep.bottom.append(blob)
        keep.top.append("wgrad_keep_" + blob)
        keep.loss_weight.append(1.0)
        keep.reduction_param.operation = caffe_pb2.ReductionParameter.SUM
    return out


def _no_conv_input_grad(solver_path):
    """A copy of the solver whose net is no_conv_input_grad_net of its net (its conv backward is
    then the weight and bias gradients alone)."""
    from caffe.proto import caffe_pb2
    from google.protobuf import text_format
    sp = caffe_pb2.SolverParameter()
    text_format.Merge(open(solver_path).read(), sp)
    net = caffe_pb2.NetParameter()
    text_format.Merge(open(sp.net).read(), net)
    sp.net = sp.net.replace(".prototxt", "_wgrad.prototxt")
    with open(sp.net, "w") as f:
        f.write(str(no_conv_input_grad_net(net)))
    path = solver_path.replace(".prototxt", "_wgrad.prototxt")
    with open(path, "w") as f:
        f.write(str(sp))
    return path


def child_profile_caffe(a):
    """Per layer kind, ms of one SGD step (median over the timed steps), two solvers per layout:
    the real net and a copy without conv input gradients (conv igrad = conv bwd - conv wgrad)."""
    import numpy as np
    import caffe
    caffe.set_mode_cpu()
    lib = machine.caffe_blas_library()
    tmp = tempfile.TemporaryDirectory()
    runs = []
    for i, (layout, inputs, workers) in enumerate(_parse_variants(a.variants)):
        folder = os.path.join(tmp.name, str(i))
        os.makedirs(folder)
        path = _caffe_net_files(layout, a.batch, inputs, a.lmdb, workers, folder)
        for which, sp in (("full", path), ("wgrad", _no_conv_input_grad(path))):
            caffe.set_random_seed(1701)
            solver = caffe.SGDSolver(sp)
            net = solver.net
            rng = np.random.default_rng(0)
            for name in (["data"] if layout in ("stacked", "plain") else ["t1", "t2", "t3", "t4", "dx", "dy"]):
                if name in net.blobs:
                    blob = net.blobs[name].data
                    blob[...] = rng.standard_normal(blob.shape, dtype=np.float32)
            runs.append(dict(layout=layout, which=which, solver=solver, clock=_LayerClock(net),
                             kinds=_caffe_kinds(net), steps=[]))
    for r in runs:
        for _ in range(a.warmup):
            r["solver"].step(1)
    for _ in range(a.iters):
        for r in runs:  # round-robin: load changes hit every net alike
            r["clock"].reset()
            t = time.perf_counter()
            r["solver"].step(1)
            step = time.perf_counter() - t
            parts = {"step": step}
            for k, f, b in zip(r["kinds"], r["clock"].fwd, r["clock"].bwd):
                if k == "conv":
                    parts["conv_fwd"] = parts.get("conv_fwd", 0.0) + f
                    parts["conv_bwd"] = parts.get("conv_bwd", 0.0) + b
                else:
                    parts[k] = parts.get(k, 0.0) + f + b
            parts["other"] = step - sum(v for k, v in parts.items() if k != "step" and k != "other") \
                + parts.get("other", 0.0)
            r["steps"].append(parts)
    _, core, threads = machine.blas_info(lib)
    out = []
    for layout in dict.fromkeys(r["layout"] for r in runs):
        full = next(r for r in runs if r["layout"] == layout and r["which"] == "full")
        wg = next(r for r in runs if r["layout"] == layout and r["which"] == "wgrad")
        times = {k: [p.get(k, 0.0) for p in full["steps"]] for k in full["steps"][0]}
        times["conv_wgrad"] = [p.get("conv_bwd", 0.0) for p in wg["steps"]]
        out.append(dict(kind="caffe", layout=layout, batch=a.batch, times=times))
    benchlib.child_print(dict(variants=out, blas_lib=lib, blas_core=core, blas_threads=threads))


def _torch_kind(name):
    n = name.lower()
    if "convolution" in n and "backward" in n or n.startswith("convolutionbackward"):
        return "conv_bwd"
    if "conv" in n:
        return "conv_fwd"
    if "max_pool" in n or "maxpool" in n:
        return "pool"
    if "relu" in n or "threshold" in n:
        return "relu"
    if "addmm" in n or n in ("aten::mm", "mmbackward0", "aten::linear", "aten::t", "tbackward0"):
        return "fc"
    if "foreach" in n or "sgd" in n or "optimizer" in n:
        return "update"
    if any(x in n for x in ("avg_pool3d", "avgpool3d", "pow", "div", "mul", "add", "constant_pad", "sub", "sum")):
        return "lrn"
    return "other"


def child_profile_torch(a):
    """The torch net of child_torch, per op kind from torch.profiler (self CPU times)."""
    import torch
    from torch.profiler import ProfilerActivity, profile
    net_step = child_torch(a, build_only=True)
    layouts = [v[0] for v in _parse_variants(a.variants)]
    out = []
    for layout in layouts:
        for _ in range(a.warmup):
            net_step(layout)
        steps = []
        for _ in range(a.iters):
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                t = time.perf_counter()
                net_step(layout)
                step = time.perf_counter() - t
            parts = {"step": step}
            for ev in prof.key_averages():
                k = _torch_kind(ev.key)
                parts[k] = parts.get(k, 0.0) + ev.self_cpu_time_total / 1e6
            total = sum(v for k, v in parts.items() if k != "step")
            parts["other"] = parts.get("other", 0.0) + parts.pop("update", 0.0)
            parts["profiled_s"] = total
            steps.append(parts)
        keys = set().union(*steps)
        out.append(dict(kind="torch", layout=layout, batch=a.batch,
                        times={k: [p.get(k, 0.0) for p in steps] for k in keys}))
    benchlib.child_print(dict(variants=out, blas_threads=torch.get_num_threads(), torch_version=torch.__version__))


def print_profile(rows):
    """ms per step and % of the step for each layer kind."""
    table = []
    for r in rows:
        med = {k: statistics.median(v) for k, v in r["times"].items()}
        step = med.get("step", 0.0)
        if r["kind"] == "torch":
            med["conv_bwd"] = med.get("conv_bwd", 0.0)
            scale = step / med["profiled_s"] if med.get("profiled_s") else 1.0
            med = {k: (v * scale if k not in ("step", "profiled_s") else v) for k, v in med.items()}
        else:
            med["conv_igrad"] = max(0.0, med.get("conv_bwd", 0.0) - med.get("conv_wgrad", 0.0))
        row = dict(name=benchlib.row_name(r), thr=r.get("blas_threads"), batch=r["batch"], step_ms=1000 * step,
                   images_s=6 * r["batch"] / step if step else None)
        for k, _ in PROFILE_COLUMNS:
            if k in med:
                row[k] = "%.0f (%.0f%%)" % (1000 * med[k], 100.0 * med[k] / step) if step else None
        table.append(row)
    cols = [("name", "row", 0), ("thr", "thr", 0), ("batch", "batch", 0), ("step_ms", "ms/step", 0),
            ("images_s", "images/s", 1)] + [(k, h + " ms (%)", 0) for k, h in PROFILE_COLUMNS]
    benchlib.print_table(table, cols, title="Where one SGD step goes (median ms per step, % of the step). Caffe: its "
                   "layer callbacks inside solver.step; conv wgrad from a copy of the net without conv input "
                   "gradients, igrad = bwd - wgrad; rest = update + split/concat + overhead. torch: "
                   "torch.profiler self CPU times scaled to the step; its conv bwd is weight+input together, "
                   "'LRN' holds every elementwise op (LRN's pow/div/mul/add/avg_pool3d and the loss's), "
                   "'rest' includes the SGD update")
    return table


# ============================================================================ child: torch
def child_torch(a, build_only=False):
    import numpy as np
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    torch.manual_seed(1701)
    torch.set_num_threads(a.threads)

    from ltc.torch_caffenet import CaffeNet
    net = CaffeNet(head=(4096, 4096, 1000))   # CaffeNet body at 114x114 -> fc8 (ReLU), the counting net
    for m in net.modules():                    # the generated nets' fillers: Xavier, biases 0 (conv) / 0.1 (fc)
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            nn.init.constant_(m.bias, 0.1 if isinstance(m, nn.Linear) else 0.0)

    def counting_loss(f, n, margin=params.MARGIN):
        t1, t2, t3, t4, dx, dy = f.split(n)
        s = t1 + t2 + t3 + t4
        d_pos = (dx - s).pow(2).sum(1)
        d_neg = (dy - s).pow(2).sum(1)
        return (d_pos + F.relu(margin - d_neg)).mean()

    weights = [p for name, p in net.named_parameters() if name.endswith("weight")]
    biases = [p for name, p in net.named_parameters() if name.endswith("bias")]
    opt = torch.optim.SGD([dict(params=weights, lr=1e-4, weight_decay=5e-4),
                           dict(params=biases, lr=2e-4, weight_decay=0.0)], lr=1e-4, momentum=0.9)
    n = a.batch
    x = torch.randn(6 * n, 3, 114, 114)
    xs = list(x.split(n))

    def step(layout):
        opt.zero_grad(set_to_none=True)
        if layout == "plain":
            loss = net(x).mean()
        elif layout == "stacked":
            loss = counting_loss(net(x), n)
        else:  # six separate calls of the shared trunk (a siamese net written branch by branch)
            loss = counting_loss(torch.cat([net(v) for v in xs]), n)
        loss.backward()
        opt.step()
        return loss

    if build_only:
        return step
    layouts = [v[0] for v in _parse_variants(a.variants)]
    for layout in layouts:
        for _ in range(a.warmup):
            step(layout)
    g = 2048
    ma, mb = torch.randn(g, g), torch.randn(g, g)
    torch.mm(ma, mb)
    times = {layout: [] for layout in layouts}
    losses, gemm = {}, []
    for _ in range(a.iters):
        for layout in layouts:
            t = time.perf_counter()
            losses[layout] = float(step(layout).detach())
            times[layout].append(time.perf_counter() - t)
        t = time.perf_counter()
        torch.mm(ma, mb)
        gemm.append(2.0 * g ** 3 / (time.perf_counter() - t) / 1e9)
    for layout, loss in losses.items():
        if not np.isfinite(loss):
            raise SystemExit("%s: loss is not finite: %r" % (layout, loss))
    cfg = torch.__config__.show().replace(" ", "")
    out = [dict(kind="torch", layout=layout, inputs="input", workers=0, batch=n, times=times[layout],
                loss=losses[layout]) for layout in layouts]
    benchlib.child_print(dict(variants=out, gemm_gflops=statistics.median(gemm), torch_version=torch.__version__,
                        blas_core="oneDNN" if "USE_MKLDNN=ON" in cfg else "torch",
                        blas_threads=torch.get_num_threads()))


# ============================================================================ parent
def add_ratios(rows):
    """vs_torch: images/s over the torch stacked row (PyTorch's faster layout of the same net and loss) of
    the same batch and thread count; vs_torch_same: over the torch row of the same layout;
    vs_plain: step time over caffe plain (same batch and BLAS) - 1 (the loss/data overhead)."""
    def threads(r):
        return r.get("blas_threads")
    for r in rows:
        if "images_s" not in r:
            continue
        peers = [p for p in rows if p["kind"] == "torch" and p["batch"] == r["batch"] and "images_s" in p
                 and threads(p) == threads(r) and p.get("isa") == r.get("isa")
                 and p["layout"] == ("plain" if r["layout"] == "plain" else "stacked")]
        if peers and r["kind"] == "caffe":
            r["vs_torch"] = r["images_s"] / peers[0]["images_s"]
            r["vs_torch_best"] = r["best_images_s"] / peers[0]["best_images_s"]
        same = [p for p in rows if p["kind"] == "torch" and p["batch"] == r["batch"] and "images_s" in p
                and threads(p) == threads(r) and p.get("isa") == r.get("isa") and p["layout"] == r["layout"]]
        if same and r["kind"] == "caffe":
            r["vs_torch_same"] = r["images_s"] / same[0]["images_s"]
        stock = [p for p in rows if p["kind"] == "caffe" and p.get("build") == "stock" and "images_s" in p
                 and p.get("isa") == r.get("isa")
                 and (p["layout"], p["inputs"], p["batch"], p["blas"], p.get("workers")) ==
                 (r["layout"], r["inputs"], r["batch"], r["blas"], r.get("workers"))]
        if stock and r["kind"] == "caffe" and r.get("build") != "stock":
            r["vs_stock"] = r["images_s"] / stock[0]["images_s"]
            r["vs_stock_best"] = r["best_images_s"] / stock[0]["best_images_s"]
        plain = [p for p in rows if p["kind"] == "caffe" and p["layout"] == "plain" and p["batch"] == r["batch"]
                 and p["blas"] == r["blas"] and "step_s" in p and p.get("build") == r.get("build")
                 and p.get("isa") == r.get("isa")]
        if plain and r["kind"] == "caffe" and r["layout"] != "plain":
            r["vs_plain_pct"] = 100.0 * (r["step_s"] / plain[0]["step_s"] - 1.0)
            r["vs_plain_best_pct"] = 100.0 * (r["min_s"] / plain[0]["min_s"] - 1.0)


COLUMNS = [("name", "row", 0), ("isa", "ISA cap", 0), ("blas", "BLAS", 0), ("blas_core", "core", 0),
           ("blas_threads", "thr", 0),
           ("batch", "batch", 0), ("images", "images", 0), ("step_ms", "ms/step", 0), ("noise_pct", "+-%", 0),
           ("samples_s", "samples/s", 1), ("images_s", "images/s", 1), ("best_images_s", "best img/s", 1),
           ("gflops", "GFLOP/s", 1), ("gemm_gflops", "sgemm GFLOP/s", 1), ("pct_limit", "% of sgemm", 0),
           ("vs_torch", "x torch", 2), ("vs_torch_best", "x torch best", 2),
           ("vs_torch_same", "x torch same layout", 2), ("vs_stock", "x stock", 2),
           ("vs_stock_best", "x stock best", 2), ("vs_plain_pct", "+% vs plain", 1),
           ("vs_plain_best_pct", "best +% vs plain", 1), ("data_wait_pct", "data wait %", 1),
           ("loss_pct", "loss %", 1), ("peak_rss_mib", "peak RSS MiB", 0)]
CSV_COLUMNS = [c for c, _, _ in COLUMNS] + ["build", "layout", "inputs", "workers", "step_s", "mean_s", "min_s", "max_s",
                                            "iters", "loss", "flops", "data_s", "loss_s", "setup_s", "blas_lib",
                                            "load_before", "torch_version", "error", "cpu_vendor", "cpu_model",
                                            "onednn_version", "onednn_isa", "onednn_conv_impl"]


def build_specs(a, lmdb):
    """The rows: per oneDNN ISA cap (--isa; None = inherited), the Caffe rows then the torch rows."""
    specs = []
    for isa in a.isa or [None]:
        for blas in a.blas:
            for batch in a.batches:
                for build in a.caffe_builds:
                    for layout in a.layouts:
                        specs.append(dict(kind="caffe", layout=layout, inputs="input", batch=batch, blas=blas,
                                          build=build, isa=isa))
                    if a.data_layer:
                        for layout in [l for l in a.layouts if l != "plain"]:
                            for w in a.workers:
                                specs.append(dict(kind="caffe", layout=layout, inputs="data_layer", batch=batch,
                                                  blas=blas, workers=w, lmdb=lmdb, build=build, isa=isa))
        if a.torch:
            for tb in a.torch_threads:
                for batch in a.batches:
                    for layout in a.layouts:
                        specs.append(dict(kind="torch", layout=layout, inputs="input", batch=batch, blas=tb,
                                          isa=isa))
    return specs


def kernel_probes(a):
    """{(kind, build, isa): dispatch info}: per Caffe build and ISA cap, the OpenBLAS core and what
    Caffe's oneDNN reports (ONEDNN_VERBOSE); per ISA cap, what PyTorch's bundled oneDNN reports.
    The BLAS setting of the probe is the first of --blas."""
    out = {}
    for isa in a.isa or [None]:
        extra = dict(ONEDNN_MAX_CPU_ISA=isa, DNNL_MAX_CPU_ISA=isa) if isa else {}
        for build in a.caffe_builds:
            env, skip = benchlib.blas_env(a.blas[0])
            if build != "venv":
                env = benchlib.build_env(env, a.caffe_builds[build])
            out["caffe", build, isa] = machine.kernel_probe(dict(env, **extra))
        if a.torch and os.path.isfile(a.torch_python):
            out["torch", "venv", isa] = benchlib.torch_kernel_probe(a.torch_python, dict(benchlib.torch_env(), **extra))
    return out


def describe_probe(p):
    text = "oneDNN %s, ISA %s, conv %s" % (p.get("onednn_version"), p.get("onednn_isa"), p.get("onednn_conv_impl"))
    if p.get("openblas_core"):
        text = "OpenBLAS %s x%s; " % (p["openblas_core"], p.get("openblas_threads")) + text
    if p.get("torch_version"):
        text = "torch %s; " % p["torch_version"] + text
    return text + ("  [probe error: %s]" % p["error"] if p.get("error") else "")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--batches", type=int, nargs="+", default=[16, 64], help="samples per batch (6 images each)")
    ap.add_argument("--layouts", nargs="+", choices=LAYOUTS, default=list(LAYOUTS))
    ap.add_argument("--blas", nargs="+", choices=sorted(benchlib.blas_presets()), default=["env", "auto"],
                    help="BLAS settings of the Caffe rows")
    ap.add_argument("--torch-threads", type=int, nargs="+", default=[os.cpu_count() or 1],
                    help="torch.set_num_threads of the torch rows")
    ap.add_argument("--no-torch", dest="torch", action="store_false", help="skip the PyTorch peer")
    ap.add_argument("--no-data-layer", dest="data_layer", action="store_false", help="skip the data-layer rows")
    ap.add_argument("--workers", type=int, nargs="+", default=[1], help="data-layer worker processes")
    ap.add_argument("--lmdb", default="data/sample/train_lmdb",
                    help="LMDB for the data-layer rows (a synthetic one is built in bench/.cache if missing)")
    ap.add_argument("--iters", type=int, default=5, help="timed iterations per row and repeat (median reported)")
    ap.add_argument("--repeats", type=int, default=1,
                    help="run every child this many times in turn (Caffe and torch alternate) and pool the steps")
    ap.add_argument("--warmup", type=int, default=2, help="untimed iterations first")
    ap.add_argument("--caffe-builds", nargs="+", default=["venv"], metavar="LABEL=PREFIX",
                    help="Caffe installs to compare (LABEL=venv: the venv's); label 'stock' is the x-stock base")
    ap.add_argument("--profile", action="store_true",
                    help="instead: per-layer-kind profile of one step (Caffe callbacks, torch.profiler)")
    ap.add_argument("--memory", action="store_true",
                    help="instead: peak RSS of training at --memory-batches (six+data, stacked+data, six Input)")
    ap.add_argument("--memory-batches", type=int, nargs="+", default=[256, 16], help="batches of --memory")
    ap.add_argument("--torch-python", default=benchlib.TORCH_VENV_PY if os.path.isfile(benchlib.TORCH_VENV_PY)
                    else benchlib.VENV_PY, help="python with PyTorch (bench/.venv-torch if present, else the "
                    "project's .venv, where `make extras` installs the CPU build)")
    ap.add_argument("--isa", nargs="+", metavar="ISA",
                    help="run every row once per oneDNN instruction-set cap (ONEDNN_MAX_CPU_ISA, e.g. AVX2 "
                    "AVX512_CORE; Caffe's oneDNN and PyTorch's alike; the BLAS keeps its own choice); "
                    "default: as inherited")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per row")
    ap.add_argument("--csv", default=None, help="CSV path (default bench/results/train_step[_memory].csv)")
    # child mode (internal)
    ap.add_argument("--child", choices=("caffe", "torch", "gemm"), help=argparse.SUPPRESS)
    ap.add_argument("--variants", default="six:input:0", help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=16, help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--gemm", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child and a.profile:
        return {"caffe": child_profile_caffe, "torch": child_profile_torch}[a.child](a) or 0
    if a.child:
        return {"caffe": child_caffe, "torch": child_torch, "gemm": child_gemm}[a.child](a) or 0
    a.caffe_builds = benchlib.parse_builds(a.caffe_builds, ap.error)
    if any(b < 2 for b in a.batches):
        ap.error("--batches: each batch needs at least 2 samples (y is another image of the batch)")
    print("train_step:", json.dumps(vars(a), sort_keys=True))
    print(machine.machine_line())
    for name, (desc, _, skip) in sorted(benchlib.blas_presets().items()):
        if name in a.blas:
            print("  blas %-16s %s%s" % (name, desc, "  [skipped: %s]" % skip if skip else ""))
    probes = {} if a.profile or a.memory else kernel_probes(a)
    for (kind, build, isa), p in probes.items():
        print("  kernels %-22s %s" % ("%s%s isa %s" % (kind, "[%s]" % build if kind == "caffe" else "",
                                                      isa or "inherited"), describe_probe(p)), flush=True)

    if a.profile:
        specs = []
        for blas in a.blas:
            for batch in a.batches:
                for build in a.caffe_builds:
                    for layout in [l for l in a.layouts if l != "plain"]:
                        specs.append(dict(kind="caffe", layout=layout, inputs="input", batch=batch, blas=blas,
                                          build=build, gemm=False))
        if a.torch:
            for tb in a.torch_threads:
                for batch in a.batches:
                    for layout in [l for l in a.layouts if l != "plain"]:
                        specs.append(dict(kind="torch", layout=layout, inputs="input", batch=batch, blas=tb))
        rows = benchlib.run_rows(specs, a)
        print()
        table = print_profile(rows)
        benchlib.write_csv(table, a.csv or os.path.join(benchlib.RESULTS, "train_step_profile.csv"))
        return 0

    if a.memory:
        lmdb = benchlib.ensure_lmdb(a.lmdb)
        blas = a.blas[-1]
        specs = []
        for batch in a.memory_batches:
            specs.append(dict(kind="caffe", layout="six", inputs="data_layer", batch=batch, blas=blas, workers=1,
                              lmdb=lmdb, iters=2, warmup=1, gemm=False, alone=True))
            specs.append(dict(kind="caffe", layout="stacked", inputs="data_layer", batch=batch, blas=blas, workers=1,
                              lmdb=lmdb, iters=2, warmup=1, gemm=False, alone=True))
            specs.append(dict(kind="caffe", layout="six", inputs="input", batch=batch, blas=blas,
                              iters=2, warmup=1, gemm=False, alone=True))
        a.repeats = 1
        rows = benchlib.run_rows(specs, a)
        cols = [c for c in COLUMNS if c[0] in ("name", "blas", "batch", "images", "step_ms", "images_s",
                                               "peak_rss_mib")]
        cols.append(("children_peak_rss_mib", "worker RSS MiB", 0))
        print()
        benchlib.print_table(rows, cols, title="Peak memory of training (RSS of the solver process; data workers separately)")
        benchlib.write_csv(rows, a.csv or os.path.join(benchlib.RESULTS, "train_step_memory.csv"),
                     CSV_COLUMNS + ["children_peak_rss_mib"])
        return 0

    lmdb = benchlib.ensure_lmdb(a.lmdb) if a.data_layer else None
    specs = [dict(kind="gemm", layout="-", inputs="-", batch=0, blas=b) for b in a.blas] + build_specs(a, lmdb)
    rows = benchlib.run_rows(specs, a)
    add_ratios(rows)
    for r in rows:   # what each row ran on (CSV)
        r.update(cpu_vendor=machine.cpu_vendor(), cpu_model=machine.cpu_name())
        p = probes.get((r["kind"], r.get("build", "venv") if r["kind"] == "caffe" else "venv", r.get("isa")))
        if p:
            r.update({k: p.get(k) for k in ("onednn_version", "onednn_isa", "onednn_conv_impl")})
    print()
    benchlib.print_table(rows, COLUMNS, title="One SGD step of the counting net (median of %d timed steps per row; +-%% = "
                   "(max-min)/median; sgemm = median of one 2048^3 sgemm per round, same process)"
                   % (a.iters * a.repeats))
    gem = [r for r in rows if r["kind"] == "gemm"]
    if gem:
        print()
        keys = [k for k in gem[0] if k.startswith("gemm_") and k[5].isdigit()]
        shape_rows = [dict(shape=k[5:], **{r["blas"]: r.get(k) for r in gem}) for k in keys]
        labels = ["limit", "conv1 per image", "conv1 x96 images", "conv2 per image+group", "conv2 x96",
                  "conv3 per image", "conv3 x96", "conv4/5 per image+group", "conv4/5 x96", "fc6 at 96 rows",
                  "conv3 weight grad per image", "conv3 input grad per image"]
        for r, lab in zip(shape_rows, labels):
            r["what"] = lab
        benchlib.print_table(shape_rows, [("shape", "M x N x K", 0), ("what", "GEMM", 0)] +
                       [(r["blas"], r["blas"], 1) for r in gem],
                       title="sgemm GFLOP/s of Caffe's BLAS by shape: Caffe runs conv as one GEMM per image (and "
                       "group); 'x96' = the same GEMM over 96 images at once")
    benchlib.write_csv(rows, a.csv or os.path.join(benchlib.RESULTS, "train_step.csv"), CSV_COLUMNS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
