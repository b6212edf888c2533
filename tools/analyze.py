#!/usr/bin/env python3
"""The paper's analyses of a trained counting net (its section 5 and Tables 4-5), one subcommand each.

    python tools/analyze.py table5 --weights L.caffemodel C.caffemodel --train-methods linear cubic
    python tools/analyze.py mean-vector  --weights runs/demo/counting_demo_iter_600.caffemodel   # Fig. 3
    python tools/analyze.py norm-ranking --weights ...                                          # Fig. 4
    python tools/analyze.py crop-scale   --weights ...                                          # Fig. 5-6
    python tools/analyze.py neighbours   --weights ...                                          # Fig. 7
    python tools/analyze.py neurons      --weights ...                                          # Fig. 8
    python tools/analyze.py count-check  --weights ... --source data/fashion/scenes_val_lmdb    # beyond the paper
    python tools/analyze.py units --weights runs/demo/*.caffemodel --init-solver prototxt/demo/solver.prototxt
                                                # live fc8 units and |phi|^2 per snapshot (and at iteration 0)
    python tools/analyze.py log --log runs/demo/train.log                                       # training curves

Every image subcommand takes ``--deploy`` (default prototxt/deploy.prototxt), ``--weights``,
``--source`` (an LMDB of the project format or a folder of images), ``--out`` (default
runs/analysis/<subcommand>), ``--max-images``; it writes PNG figures plus CSV/JSON numbers
into --out and prints the headline numbers. Inputs are prepared with the data layer's own
transforms (see ltc/analysis/): one view per image (``--view full``: the whole image
resized to the net's input size; ``center``: the central --crop region downsampled), in
``--color-mode`` color or gray, each input normalised on its own like the data layer does.
Forward passes run ``--batch`` images at a time on the CPU.
"""
import argparse
import os
import sys
import time

import numpy as np

from ltc import REPO, caffe_env, cli_checks, params
caffe_env.quiet_glog()   # before pycaffe loads: keeps Caffe's net-setup log out of the output
from ltc.analysis import caffelog, countmap, features, metrics, report, trainlog, units
from ltc.analysis import table5 as t5

DEFAULT_DEPLOY = "prototxt/deploy.prototxt"
DEFAULT_WEIGHTS = "runs/demo/counting_demo_iter_600.caffemodel"
DEFAULT_SOURCE = "data/sample/train_lmdb"
DEFAULT_QUERIES = "data/sample/val_lmdb"
DEFAULT_SCENES = "data/fashion/scenes_val_lmdb"


# ============================================================================ helpers
def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _out_dir(args):
    out = args.out or os.path.join(REPO, "runs", "analysis", args.cmd)
    os.makedirs(out, exist_ok=True)
    return out


def _features(args, weights=None, phi=None):
    """(phi, images, F, labels) for the image subcommands."""
    phi = phi or features.CaffeFeatures(args.deploy, weights or args.weights, batch=args.batch)
    images = features.ImageSet(args.source, args.max_images, who=args.cmd)
    F, labels = features.extract_features(phi, images, view=args.view, crop=args.crop, interp=args.interp,
                                    color_mode=args.color_mode, chunk=args.batch, desc=args.cmd)
    return phi, images, F, labels


def _caption(images, i, extra):
    name = images.names[i]
    name = name if len(name) <= 22 else "..." + name[-19:]
    return "%s\n%s" % (name, extra)


def _done(out, files):
    print("wrote:")
    for f in files:
        print("  " + f)


# ============================================================================ subcommands
def cmd_table5(args):
    if args.weights is None:
        raise features.AnalysisError("table5 needs --weights (one .caffemodel per training method)")
    if len(args.train_methods) != len(args.weights):
        raise features.AnalysisError("table5: %d --weights but %d --train-methods; give one training method per model "
                               "(linear, cubic, area, lanczos, mixed)" % (len(args.weights), len(args.train_methods)))
    deploys = args.deploys or [args.deploy] * len(args.weights)
    if len(deploys) != len(args.weights):
        raise features.AnalysisError("table5: --deploys needs one prototxt per --weights file")
    models = [(m, features.CaffeFeatures(d, w, batch=args.batch)) for m, d, w in zip(args.train_methods, deploys, args.weights)]
    images = features.ImageSet(args.source, args.max_images, who="table5")
    res = t5.table5(models, images, crop=args.crop, seed=args.seed, gray_prob=args.gray_prob)
    out = _out_dir(args)
    table = t5.format_table5(args.train_methods, res["matrix"], res["std"])
    print("\nTable 5 (eq. 6), %d images of %s:\n%s" % (len(images), images.source, table))
    if np.allclose(res["matrix"][:, 0], res["matrix"][:, 2], rtol=1e-6, atol=0):
        print("note: OpenCV's INTER_LINEAR and INTER_AREA give bit-identical images when shrinking by exactly 2 "
              "(%d -> %d), so the Linear and Area columns coincide" % (args.crop, args.crop // 2))
    paper = [m for m in features.TRAIN_METHODS]
    print("\npaper's Table 5 (ImageNet, 350K iterations):\n" + t5.format_table5(
        paper, [t5.PAPER_TABLE5[m][:5] for m in paper], [t5.PAPER_TABLE5[m][5] for m in paper]))
    rows = []
    for r, m in enumerate(args.train_methods):
        row = dict(train_method=m, weights=args.weights[r], std=res["std"][r], denominator=res["denom"][r])
        row.update({"test_" + t: res["matrix"][r, j] for j, t in enumerate(features.TEST_METHODS)})
        rows.append(row)
    files = [report.write_csv(os.path.join(out, "table5.csv"), rows,
                          ["train_method"] + ["test_" + t for t in features.TEST_METHODS] + ["std", "denominator", "weights"])]
    files.append(report.write_json(os.path.join(out, "table5.json"), dict(
        command=" ".join(sys.argv), source=images.source, n_images=len(images), crop=args.crop, seed=args.seed,
        gray_prob=args.gray_prob, n_gray=int(res["gray"].sum()), train_methods=args.train_methods,
        test_methods=features.TEST_METHODS, weights=args.weights, matrix=res["matrix"], std=res["std"],
        numerators=res["numer"], denominators=res["denom"], table=table, paper_table5=t5.PAPER_TABLE5,
        std_convention="sample std (ddof=1) over the four single-method test columns",
        mixed_denominator="for a mixed-trained model: |phi(D x)|^2 averaged over the four methods")))
    plt = _plt()
    fig, ax = plt.subplots(figsize=(1.2 * 6 + 1, 0.6 * len(rows) + 1.5))
    mat = np.column_stack([res["matrix"], res["std"]])
    im = ax.imshow(res["matrix"], cmap="viridis", aspect="auto")
    for r in range(mat.shape[0]):
        for j in range(mat.shape[1]):
            ax.text(j, r, "%.3f" % mat[r, j], ha="center", va="center", fontsize=9,
                    color="black" if j == 5 else "white")
    ax.set_xticks(range(6))
    ax.set_xticklabels([t.capitalize() for t in features.TEST_METHODS] + ["std"])
    ax.set_xlim(-0.5, 5.5)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([m.capitalize() for m in args.train_methods])
    ax.set_xlabel("test downsampling")
    ax.set_ylabel("train downsampling")
    ax.set_title("Table 5: eq. 6 error (%d images)" % len(images), fontsize=10)
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    files.append(os.path.join(out, "table5.png"))
    fig.savefig(files[-1], dpi=90)
    plt.close(fig)
    _done(out, files)
    return res


def cmd_mean_vector(args):
    phi, images, F, _ = _features(args)
    st = metrics.mean_vector_stats(F, args.threshold)
    out = _out_dir(args)
    print("\nFig. 3: mean counting vector over %d images of %s (%d dims)" % (len(images), images.source, phi.dim))
    print("  entries with mean > 0: %d of %d" % (st["n_nonzero"], phi.dim))
    print("  entries with mean > %g: %d" % (args.threshold, st["n_above_threshold"]))
    print("  entries with mean > 1%% of the largest mean (%.4g): %d" % (st["max_mean"], st["n_above_rel"]))
    print("  mean counting-vector norm: %.4g   (paper, ImageNet: 30 non-zero of 1000)" % st["mean_norm"])
    rows = [dict(dim=d, mean=st["mean"][d], std=st["std"][d], frac_active=st["frac_active"][d]) for d in range(phi.dim)]
    files = [report.write_csv(os.path.join(out, "mean_vector.csv"), rows, ["dim", "mean", "std", "frac_active"])]
    summary = {k: v for k, v in st.items() if k not in ("mean", "std", "frac_active")}
    top = np.argsort(-st["mean"], kind="mergesort")[:20]
    summary.update(command=" ".join(sys.argv), source=images.source, weights=args.weights,
                   top_dims=[dict(dim=int(d), mean=st["mean"][d]) for d in top])
    files.append(report.write_json(os.path.join(out, "mean_vector.json"), summary))
    plt = _plt()
    fig, axes = plt.subplots(2, 1, figsize=(10, 6))
    axes[0].bar(np.arange(phi.dim), st["mean"], width=1.0, color="tab:blue")
    axes[0].set_xlim(-0.5, phi.dim - 0.5)
    axes[0].set_xlabel("counting-vector entry")
    axes[0].set_ylabel("mean response")
    axes[0].set_title("Fig. 3: mean counting vector, %d images; %d of %d entries > 0, %d > %g"
                      % (len(images), st["n_nonzero"], phi.dim, st["n_above_threshold"], args.threshold), fontsize=10)
    srt = np.sort(st["mean"])[::-1]
    axes[1].bar(np.arange(phi.dim), srt, width=1.0, color="tab:orange")
    axes[1].axhline(args.threshold, color="k", lw=0.8, ls="--", label="threshold %g" % args.threshold)
    axes[1].set_xlim(-0.5, min(phi.dim, max(50, 2 * st["n_above_threshold"])) - 0.5)
    axes[1].set_xlabel("entries sorted by mean response")
    axes[1].set_ylabel("mean response")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    files.append(os.path.join(out, "mean_vector.png"))
    fig.savefig(files[-1], dpi=90)
    plt.close(fig)
    _done(out, files)
    return st


def cmd_norm_ranking(args):
    phi, images, F, _ = _features(args)
    k = min(args.k, max(1, len(images) // 2))
    if k < args.k:
        print("note: %d images, so %d per sheet (the highest and lowest sheets stay disjoint)" % (len(images), k))
    top, low, norms = metrics.rank_by_norm(F, k)
    out = _out_dir(args)
    print("\nFig. 4: counting-vector norm over %d images: min %.4g, median %.4g, max %.4g"
          % (len(images), norms.min(), np.median(norms), norms.max()))
    order = np.lexsort((np.arange(len(norms)), -norms))
    rows = [dict(rank=r + 1, index=int(i), key=images.names[i], norm=norms[i]) for r, i in enumerate(order)]
    files = [report.write_csv(os.path.join(out, "norms.csv"), rows, ["rank", "index", "key", "norm"])]
    files.append(report.write_json(os.path.join(out, "norm_ranking.json"), dict(
        command=" ".join(sys.argv), source=images.source, n_images=len(images),
        highest=[dict(index=int(i), key=images.names[i], norm=norms[i]) for i in top],
        lowest=[dict(index=int(i), key=images.names[i], norm=norms[i]) for i in low],
        norm_min=norms.min(), norm_median=np.median(norms), norm_max=norms.max())))
    ncols = int(np.ceil(np.sqrt(k)))
    for name, sel in (("highest", top), ("lowest", low)):
        files.append(report.image_grid(os.path.join(out, "norm_%s.png" % name), [images.load(i)[0] for i in sel],
                                   [_caption(images, i, "norm %.3g" % norms[i]) for i in sel], ncols=ncols,
                                   title="Fig. 4: the %d images with the %s counting-vector norm" % (len(sel), name)))
    _done(out, files)
    return dict(top=top, low=low, norms=norms)


def cmd_crop_scale(args):
    phi, images, F, _ = _features(args)
    top, low, norms = metrics.rank_by_norm(F, min(args.set_size, len(images) // 2))
    if len(top) < 1:
        raise features.AnalysisError("crop-scale needs at least 2 images, got %d" % len(images))
    from tqdm import tqdm
    s = phi.input_size
    rows = []
    sets = (("highest", top), ("lowest", low))
    bar = tqdm(total=(len(top) + len(low)) * args.crops, desc="crops", unit="crop")
    for set_name, sel in sets:
        for i in sel:
            img, _ = images.load(int(i))
            rng = np.random.default_rng([args.seed, int(i)])
            views, boxes = [], []
            for c in range(args.crops):
                y0, x0, h, w = features.crop_box(rng, img.shape[0], img.shape[1], args.min_area, args.max_area)
                views.append(features.image_view(img[y0:y0 + h, x0:x0 + w], s, "full", interp=args.interp))
                boxes.append((y0, x0, h, w))
            x = np.concatenate([features.normalise_views([v], args.color_mode == "gray") for v in views])
            n = metrics.l2_norms(phi(x))
            for c, (y0, x0, h, w) in enumerate(boxes):
                rows.append(dict(set=set_name, index=int(i), key=images.names[i], crop=c, y0=y0, x0=x0, h=h, w=w,
                                 area=h * w / float(img.shape[0] * img.shape[1]), norm=n[c], image_norm=norms[i]))
            bar.update(args.crops)
    bar.close()
    edges = np.linspace(args.min_area, args.max_area, args.bins + 1)
    out = _out_dir(args)
    summary = dict(command=" ".join(sys.argv), source=images.source, n_images=len(images), set_size=len(top),
                   crops_per_image=args.crops, area_range=[args.min_area, args.max_area], sets={})
    print("\nFig. 6: counting-vector norm of %d crops per image (area %.0f-%.0f%%), sets of %d images"
          % (args.crops, 100 * args.min_area, 100 * args.max_area, len(top)))
    for set_name, _ in sets:
        a = np.array([r["area"] for r in rows if r["set"] == set_name])
        v = np.array([r["norm"] for r in rows if r["set"] == set_name])
        bins = metrics.bin_stats(a, v, edges)
        rho = metrics.spearman(a, v)
        summary["sets"][set_name] = dict(bins=bins, spearman_area_norm=rho, n_crops=len(a))
        print("  %-8s set: " % set_name + "  ".join("%.2f-%.2f: %.3g+-%.2g" % (b["lo"], b["hi"], b["mean"], b["std"])
                                                    for b in bins) + "   Spearman(area, norm) = %.3f" % rho)
    files = [report.write_csv(os.path.join(out, "crops.csv"), rows,
                          ["set", "index", "key", "crop", "y0", "x0", "h", "w", "area", "norm", "image_norm"]),
             report.write_json(os.path.join(out, "crop_scale.json"), summary)]
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for (set_name, _), col, off in zip(sets, ("tab:red", "tab:blue"), (-0.004, 0.004)):
        b = summary["sets"][set_name]["bins"]
        ax.errorbar([x["center"] + off for x in b], [x["mean"] for x in b], yerr=[x["std"] for x in b],
                    marker="o", capsize=3, color=col, label="%s-norm set (%d images)" % (set_name, len(top)))
    ax.set_xlabel("crop area / image area")
    ax.set_ylabel("counting vector norm (mean +- std)")
    ax.set_title("Fig. 6: norm against crop scale", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    files.append(os.path.join(out, "crop_scale.png"))
    fig.savefig(files[-1], dpi=90)
    plt.close(fig)
    # Fig. 5: the crops of the highest-norm image, by increasing area
    i = int(top[0])
    img, _ = images.load(i)
    ex = sorted([r for r in rows if r["index"] == i and r["set"] == "highest"], key=lambda r: r["area"])
    crops = [img[r["y0"]:r["y0"] + r["h"], r["x0"]:r["x0"] + r["w"]] for r in ex]
    files.append(report.image_grid(os.path.join(out, "crops_example.png"), crops,
                               ["area %.2f\nnorm %.3g" % (r["area"], r["norm"]) for r in ex], ncols=len(crops),
                               title="Fig. 5: crops of %s by increasing size" % images.names[i], cell=1.6))
    _done(out, files)
    return summary


def cmd_neighbours(args):
    phi, images, F, _ = _features(args)
    if args.database:
        db = features.ImageSet(args.database, args.max_images, who="neighbours database")
        Fd, _ = features.extract_features(phi, db, view=args.view, crop=args.crop, interp=args.interp,
                                    color_mode=args.color_mode, chunk=args.batch, desc="database")
        same = os.path.realpath(db.source) == os.path.realpath(images.source)
    else:
        db, Fd, same = images, F, True
    rng = np.random.default_rng(args.seed)
    nq = min(args.queries, len(images))
    q = np.sort(rng.choice(len(images), nq, replace=False))
    idx, dist = metrics.nearest_neighbours(F[q], Fd, args.k, exclude=list(q) if same else None)
    out = _out_dir(args)
    rows = []
    for a, qi in enumerate(q):
        for r in range(idx.shape[1]):
            rows.append(dict(query=int(qi), query_key=images.names[qi], rank=r + 1, neighbour=int(idx[a, r]),
                             neighbour_key=db.names[idx[a, r]], distance=dist[a, r]))
    # a chance baseline: the mean distance from a query to the database
    mean_d = float(np.mean([np.sqrt(((Fd - F[qi]) ** 2).sum(1)).mean() for qi in q]))
    print("\nFig. 7: %d queries from %s, %d nearest neighbours in %s; mean distance to the nearest %.4g, "
          "to the k-th %.4g, to the whole database %.4g" % (nq, images.source, idx.shape[1], db.source,
                                                          dist[:, 0].mean(), dist[:, -1].mean(), mean_d))
    files = [report.write_csv(os.path.join(out, "neighbours.csv"), rows,
                          ["query", "query_key", "rank", "neighbour", "neighbour_key", "distance"]),
             report.write_json(os.path.join(out, "neighbours.json"), dict(
                 command=" ".join(sys.argv), source=images.source, database=db.source, queries=q, k=idx.shape[1],
                 neighbours=idx, distances=dist, mean_distance_to_database=mean_d))]
    ims, caps, border = [], [], []
    for a, qi in enumerate(q):
        ims.append(images.load(int(qi))[0])
        caps.append(_caption(images, qi, "query |f| %.3g" % np.sqrt((F[qi] ** 2).sum())))
        border.append("red")
        for r in range(idx.shape[1]):
            ims.append(db.load(int(idx[a, r]))[0])
            caps.append(_caption(db, idx[a, r], "d %.3g" % dist[a, r]))
            border.append(None)
    files.append(report.image_grid(os.path.join(out, "neighbours.png"), ims, caps, ncols=idx.shape[1] + 1, border=border,
                               title="Fig. 7: queries (red) and nearest neighbours in counting space", cell=1.6))
    _done(out, files)
    return dict(queries=q, idx=idx, dist=dist)


def cmd_neurons(args):
    phi, images, F, _ = _features(args)
    neurons, mean = metrics.top_neurons(F, args.neurons)
    out = _out_dir(args)
    rows, ims, caps, labels = [], [], [], []
    print("\nFig. 8: the %d most active neurons (by mean response over %d images)" % (len(neurons), len(images)))
    for j in neurons:
        sel = metrics.top_images(F, j, args.k)
        print("  neuron %4d: mean %.4g, top activations %s" % (j, mean[j], " ".join("%.3g" % F[i, j] for i in sel)))
        for r, i in enumerate(sel):
            rows.append(dict(neuron=int(j), neuron_mean=mean[j], rank=r + 1, index=int(i), key=images.names[i],
                             activation=F[i, j]))
            ims.append(images.load(int(i))[0])
            caps.append(_caption(images, i, "%.3g" % F[i, j]))
        labels.append("neuron %d" % j)
    files = [report.write_csv(os.path.join(out, "neurons.csv"), rows,
                          ["neuron", "neuron_mean", "rank", "index", "key", "activation"]),
             report.write_json(os.path.join(out, "neurons.json"), dict(
                 command=" ".join(sys.argv), source=images.source, n_images=len(images), neurons=neurons,
                 neuron_means=mean[neurons], n_active=int((mean > 0).sum()), top=rows))]
    files.append(report.image_grid(os.path.join(out, "neurons.png"), ims, caps, ncols=args.k, row_labels=labels,
                               title="Fig. 8: the %d images activating each of the %d most active neurons most"
                                     % (args.k, len(neurons)), cell=1.5))
    _done(out, files)
    return dict(neurons=neurons, mean=mean)


def cmd_count_check(args):
    phi, images, F, labels = _features(args)
    if any(lab is None for lab in labels):
        raise features.AnalysisError("count-check needs an LMDB whose labels are object counts (data/fashion/"
                               "scenes_*_lmdb); '%s' is a folder without labels" % images.source)
    k = np.array(labels, np.float64)
    if len(np.unique(k)) < 2:
        raise features.AnalysisError("count-check: every image of '%s' has the label %d, so there is no count to "
                                     "rank against (Spearman would be nan); give an LMDB whose labels are object "
                                     "counts (data/fashion/scenes_*_lmdb)" % (images.source, int(k[0])))
    norms = metrics.l2_norms(F)
    rho = metrics.spearman(norms, k)
    from scipy import stats
    sp = stats.spearmanr(norms, k)
    pr = stats.pearsonr(norms, k) if np.std(norms) > 0 and np.std(k) > 0 else None
    ks = np.unique(k)
    per_k = [dict(k=int(v), count=int((k == v).sum()), mean=norms[k == v].mean(), std=norms[k == v].std())
             for v in ks]
    out = _out_dir(args)
    print("\nCount check on %d images of %s: Spearman(norm, object count) = %.4f (p = %.3g)%s"
          % (len(images), images.source, rho, sp.pvalue,
             "" if pr is None else ", Pearson = %.4f" % pr.statistic))
    for r in per_k:
        print("  k = %2d: %4d images, norm %.4g +- %.3g" % (r["k"], r["count"], r["mean"], r["std"]))
    ustats = units.unit_stats(F)
    print(units.units_line(ustats))
    amp = units.amplitude_check(norms, k, _amplitudes(args, images, phi.input_size))
    print(units.amplitude_line(amp))
    fit = None
    if args.fit_source:   # additivity: a least-squares map phi -> k fitted on other scenes
        fit_args = argparse.Namespace(**dict(vars(args), source=args.fit_source, max_images=args.fit_max_images))
        _, fit_images, F_fit, fit_labels = _features(fit_args, phi=phi)
        if any(lab is None for lab in fit_labels):
            raise features.AnalysisError("--fit-source '%s' has no count labels" % fit_images.source)
        w, c = countmap.fit_count_map(F_fit, fit_labels, alpha=args.ridge)
        pred = countmap.predict_count(F, w, c)
        fit = dict(fit_source=fit_images.source, n_fit=len(fit_images), ridge=args.ridge,
                   train=countmap.count_scores(countmap.predict_count(F_fit, w, c), fit_labels),
                   **countmap.count_scores(pred, k))
        print("Least-squares map phi -> k fitted on %d scenes of %s: on %s, round(prediction) == k for %.1f %%, "
              "within +-1 for %.1f %% (mean |error| %.3f; on the fitted scenes %.1f %% / %.1f %%)"
              % (len(fit_images), fit_images.source, images.source, 100 * fit["exact"], 100 * fit["within1"],
                 fit["mae"], 100 * fit["train"]["exact"], 100 * fit["train"]["within1"]))
    rows = [dict(index=i, key=images.names[i], count=int(k[i]), norm=norms[i]) for i in range(len(images))]
    if fit:
        for r, v in zip(rows, pred):
            r["predicted_count"] = float(v)
    files = [report.write_csv(os.path.join(out, "count_check.csv"), rows,
                              ["index", "key", "count", "norm"] + (["predicted_count"] if fit else [])),
             report.write_json(os.path.join(out, "count_check.json"), dict(
                 command=" ".join(sys.argv), source=images.source, n_images=len(images), spearman=rho,
                 spearman_scipy=float(sp.statistic), spearman_p=float(sp.pvalue),
                 pearson=None if pr is None else float(pr.statistic), per_count=per_k, count_map=fit,
                 units={k_: v for k_, v in ustats.items() if k_ != "active_fraction"}, amplitude=amp))]
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    jitter = np.random.default_rng(args.seed).uniform(-0.15, 0.15, len(k))
    ax.scatter(k + jitter, norms, s=6, alpha=0.4, color="tab:gray", label="images")
    ax.errorbar([r["k"] for r in per_k], [r["mean"] for r in per_k], yerr=[r["std"] for r in per_k], marker="o",
                color="tab:red", capsize=3, label="mean +- std per count")
    ax.set_xlabel("true object count k")
    ax.set_ylabel("counting vector norm")
    ax.set_title("Counting check: Spearman rho = %.3f (n = %d)" % (rho, len(k)), fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    files.append(os.path.join(out, "count_check.png"))
    fig.savefig(files[-1], dpi=90)
    plt.close(fig)
    _done(out, files)
    return dict(spearman=rho, per_k=per_k, count_map=fit)


def _amplitudes(args, images, size):
    """Foreground amplitude (ltc/analysis/units.py) of every image's input view, as count-check feeds it."""
    return [units.foreground_amplitude(features.image_view(images.load(i)[0], size, args.view, args.crop, args.interp),
                                       gray=args.color_mode == "gray") for i in range(len(images))]


def cmd_units(args):
    """Live fc8 units and |phi|^2 of each --weights (and of --init-solver's iteration-0 net) on --source."""
    weights = list(args.weights or [])
    out = _out_dir(args)
    if args.init_solver:
        from caffe.proto import caffe_pb2
        from google.protobuf import text_format
        from ltc import study
        path = features.resolve_path(args.init_solver)
        if not os.path.isfile(path):
            raise features.AnalysisError("--init-solver '%s' does not exist (looked in %s)" % (args.init_solver, path))
        sp = caffe_pb2.SolverParameter()
        try:
            text_format.Merge(open(path).read(), sp)
        except text_format.ParseError as e:
            raise features.AnalysisError("--init-solver '%s' is not a solver prototxt: %s" % (path, e))
        init = os.path.join(out, "iter_0_seed%d.caffemodel" % sp.random_seed)
        study.save_random_init(sp.net, init, sp.random_seed)
        weights.insert(0, init)
    if not weights:
        raise features.AnalysisError("units needs --weights and/or --init-solver")
    images = features.ImageSet(args.source, args.max_images, who=args.cmd)
    rows = []
    print("\nfc8 units on %d images of %s (live: > 0 on at least one image)" % (len(images), images.source))
    for w in weights:
        phi = features.CaffeFeatures(args.deploy, w, batch=args.batch, log=None)
        F, labels = features.extract_features(phi, images, view=args.view, crop=args.crop, interp=args.interp,
                                              color_mode=args.color_mode, chunk=args.batch, progress=False)
        st = units.unit_stats(F)
        row = dict(weights=w, **{k: v for k, v in st.items() if k != "active_fraction"})
        if all(lab is not None for lab in labels):
            row["spearman"] = metrics.spearman(metrics.l2_norms(F), labels)
        rows.append(row)
        print("  %s: live %d of %d, active per image %.1f, |phi|^2 mean %.4g%s"
              % (os.path.relpath(features.resolve_path(w), os.getcwd()), st["live"], st["dim"], st["active_per_input"],
                 st["sq_norm_mean"], ", Spearman(|phi|, k) %.3f" % row["spearman"] if "spearman" in row else ""))
    files = [report.write_csv(os.path.join(out, "units.csv"), rows, list(rows[0].keys())),
             report.write_json(os.path.join(out, "units.json"), dict(command=" ".join(sys.argv), source=images.source,
                                                                    n_images=len(images), rows=rows))]
    _done(out, files)
    return rows


def cmd_log(args):
    path = features.resolve_path(args.log)
    if not os.path.isfile(path):
        raise features.AnalysisError("log '%s' does not exist (looked in %s); caffe writes its log to stderr: "
                               "caffe train ... 2> train.log" % (args.log, path))
    with open(path, errors="replace") as f:
        res = caffelog.parse_caffe_log(f.read())
    if not res["train"] and not res["test"]:
        raise features.AnalysisError("log '%s' holds no 'Iteration N ..., loss = ...' or 'Test net output' lines; is it a "
                               "Caffe training log (stderr of caffe train, written with GLOG_minloglevel=0)?" % path)
    out = _out_dir(args)
    files = [report.write_csv(os.path.join(out, "train.csv"), res["train"]),
             report.write_csv(os.path.join(out, "test.csv"), res["test"])]
    last_train = res["train"][-1] if res["train"] else None
    print("\nlog %s: %d train rows, %d test rows, %d lr rows" % (path, len(res["train"]), len(res["test"]), len(res["lr"])))
    if last_train:
        print("  last train: iteration %d, loss %.5g, %.1f s" % (last_train["iteration"], last_train["loss"],
                                                               last_train["seconds"] or 0.0))
    for t in res["test"][-3:]:
        print("  test: iteration %d, %s" % (t["iteration"], ", ".join("%s %.5g" % (k, v) for k, v in t.items()
                                                                      if k.startswith("test_"))))
    for prefix, rows in (("train", res["train"]), ("test", res["test"])):
        last = [r for r in rows if "%s_norm_dx" % prefix in r][-1:]
        if last:
            print("  last %s diagnostics (iteration %d): %s" % (prefix, last[0]["iteration"], ", ".join(
                "%s %.4g" % (n, last[0]["%s_%s" % (prefix, n)]) for n in trainlog.DIAGNOSTICS
                if "%s_%s" % (prefix, n) in last[0])))
    warnings = [w for w in (trainlog.trivial_solution(res["train"], "train", args.margin),
                            trainlog.trivial_solution(res["test"], "test", args.margin)) if w]
    for w in warnings:
        print(w)
    files.append(report.write_json(os.path.join(out, "log.json"), dict(command=" ".join(sys.argv), log=path,
                                                                       warnings=warnings, **res)))
    plt = _plt()
    diag = any(trainlog.series(res[ph], ph, "norm_dx") for ph in ("train", "test"))
    fig, axes = plt.subplots(1, 3 if diag else 2, figsize=(16 if diag else 11, 4))
    ax = axes[0]
    if res["train"]:
        ax.plot([r["iteration"] for r in res["train"]], [r["loss"] for r in res["train"]], ".-", label="train loss")
    tests = {}
    for r in res["test"]:
        for key, v in r.items():
            if key.startswith("test_") and "loss" in key:
                tests.setdefault("net %d %s" % (r["net"], key[5:]), []).append((r["iteration"], v))
    for name, pts in tests.items():
        ax.plot(*zip(*pts), "o-", label="test " + name)
    losses = [r["loss"] for r in res["train"]] + [v for pts in tests.values() for _, v in pts]
    if losses and min(losses) > 0 and max(losses) / min(losses) > 50:
        ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.set_title(os.path.basename(path), fontsize=10)
    ax.legend(fontsize=8)
    ax = axes[1]
    if res["lr"]:
        ax.plot(*zip(*res["lr"]), ".-", color="tab:green", drawstyle="steps-post", label="learning rate")
        ax.set_ylabel("learning rate")
        ax.set_xlabel("iteration")
        ax.legend(fontsize=8, loc="upper right")
        if any(r["seconds"] is not None for r in res["train"]):
            ax2 = ax.twinx()
            pts = [(r["iteration"], r["seconds"]) for r in res["train"] if r["seconds"] is not None]
            ax2.plot(*zip(*pts), color="tab:purple", lw=1, label="wall time")
            ax2.set_ylabel("wall time (s)")
            ax2.legend(fontsize=8, loc="lower right")
    ax.set_title("learning rate and wall time", fontsize=10)
    if diag:   # the loss layer's diagnostic tops
        ax = axes[2]
        ax2 = ax.twinx()
        for ph, style in (("train", "-"), ("test", "o--")):
            for name, color in (("count_term", "tab:blue"), ("contrast_term", "tab:orange")):
                pts = trainlog.series(res[ph], ph, name)
                if pts:
                    ax.plot(*zip(*pts), style, color=color, ms=3, label="%s %s" % (ph, name))
            for name, color in (("hinge_active", "tab:red"), ("norm_dx", "tab:green")):
                pts = trainlog.series(res[ph], ph, name)
                if pts:
                    ax2.plot(*zip(*pts), style, color=color, ms=3, lw=1, label="%s %s" % (ph, name))
        ax.axhline(args.margin, color="gray", lw=0.8, ls=":")
        ax.set_yscale("symlog", linthresh=1.0)
        ax.set_ylim(bottom=0)
        ax.set_xlabel("iteration")
        ax.set_ylabel("loss terms (M dotted)")
        ax2.set_ylabel("hinge-active fraction, mean |phi(Dx)|")
        ax.legend(fontsize=7, loc="upper right")
        ax2.legend(fontsize=7, loc="center right")
        ax.set_title("loss diagnostics" + ("  [TRIVIAL SOLUTION]" if warnings else ""), fontsize=10,
                     color="red" if warnings else "black")
    fig.tight_layout()
    files.append(os.path.join(out, "curves.png"))
    fig.savefig(files[-1], dpi=90)
    plt.close(fig)
    _done(out, files)
    return res


# ============================================================================ argument parsing
_pos_int = cli_checks.int_range(1, 10 ** 7)   # the project's shared argument types (ltc/cli_checks.py)
_fraction = cli_checks.probability


def _image_args(p, source=DEFAULT_SOURCE):
    p.add_argument("--deploy", default=DEFAULT_DEPLOY, help="deploy prototxt (input blob data, output blob fc8)")
    p.add_argument("--weights", default=DEFAULT_WEIGHTS, help=".caffemodel of a counting net")
    p.add_argument("--source", default=source, help="LMDB (project format) or folder of images")
    p.add_argument("--out", default=None, help="output folder (default runs/analysis/<subcommand>)")
    p.add_argument("--max-images", type=_pos_int, default=1000, help="use the first N images (key / file-name order)")
    p.add_argument("--batch", type=_pos_int, default=64, help="images per forward pass")
    p.add_argument("--view", choices=features.VIEWS, default="full",
                   help="full: whole image resized to the input size; center: central --crop region downsampled")
    p.add_argument("--crop", type=_pos_int, default=228, help="crop size of --view center (input size = crop / 2)")
    p.add_argument("--interp", choices=features.METHODS, default="area", help="OpenCV interpolation of the resize")
    p.add_argument("--color-mode", choices=features.COLOR_MODES, default="color", help="feed colour or gray inputs")
    p.add_argument("--seed", type=cli_checks.int_range(0, 2 ** 32 - 1), default=1701, help="seed of every random choice")


def build_parser():
    fmt = argparse.ArgumentDefaultsHelpFormatter
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("table5", formatter_class=fmt, help="Table 5: eq. 6 error by train/test downsampling")
    p.add_argument("--deploy", default=DEFAULT_DEPLOY, help="deploy prototxt shared by all models")
    p.add_argument("--deploys", nargs="+", default=None, help="one deploy prototxt per model (overrides --deploy)")
    p.add_argument("--weights", nargs="+", default=None, help="one .caffemodel per model (rows of the table)")
    p.add_argument("--train-methods", nargs="+", default=["mixed"], choices=features.TRAIN_METHODS,
                   help="the downsampling each model was trained with, one per --weights (mixed = random per batch)")
    p.add_argument("--source", default=DEFAULT_SOURCE, help="LMDB or image folder (images >= --crop on each side)")
    p.add_argument("--out", default=None, help="output folder (default runs/analysis/table5)")
    p.add_argument("--max-images", type=_pos_int, default=1000, help="use the first N images")
    p.add_argument("--batch", type=_pos_int, default=64, help="inputs per forward pass")
    p.add_argument("--crop", type=_pos_int, default=228, help="pretext crop x (tiles and D(x) are crop/2)")
    p.add_argument("--gray-prob", type=_fraction, default=params.GRAY_PROB, help="probability of gray inputs per image (as training)")
    p.add_argument("--seed", type=cli_checks.int_range(0, 2 ** 32 - 1), default=1701, help="seed of the crops, colour modes and mixed methods")

    p = sub.add_parser("mean-vector", formatter_class=fmt, help="Fig. 3: mean counting vector and its sparsity")
    _image_args(p)
    p.add_argument("--threshold", type=cli_checks.finite_float, default=0.01, help="count the entries whose mean exceeds this")

    p = sub.add_parser("norm-ranking", formatter_class=fmt, help="Fig. 4: highest / lowest norm images")
    _image_args(p)
    p.add_argument("--k", type=_pos_int, default=16, help="images per contact sheet (at most half the images)")

    p = sub.add_parser("crop-scale", formatter_class=fmt, help="Fig. 5-6: norm against crop scale")
    _image_args(p)
    p.add_argument("--set-size", type=_pos_int, default=100, help="images in the highest- and lowest-norm sets")
    p.add_argument("--crops", type=_pos_int, default=10, help="random crops per image")
    p.add_argument("--min-area", type=_fraction, default=0.5, help="smallest crop area (fraction of the image)")
    p.add_argument("--max-area", type=_fraction, default=0.95, help="largest crop area (fraction of the image)")
    p.add_argument("--bins", type=_pos_int, default=5, help="crop-scale bins of the plot")

    p = sub.add_parser("neighbours", formatter_class=fmt, help="Fig. 7: nearest neighbours in counting space")
    _image_args(p, source=DEFAULT_QUERIES)
    p.add_argument("--database", default=DEFAULT_SOURCE,
                   help="LMDB/folder searched ('' = --source itself, each query excluded from its own list)")
    p.add_argument("--queries", type=_pos_int, default=8, help="random queries drawn from --source")
    p.add_argument("--k", type=_pos_int, default=7, help="neighbours per query")

    p = sub.add_parser("neurons", formatter_class=fmt, help="Fig. 8: top images of the most active neurons")
    _image_args(p)
    p.add_argument("--neurons", type=_pos_int, default=4, help="how many of the most active neurons")
    p.add_argument("--k", type=_pos_int, default=8, help="images per neuron")

    p = sub.add_parser("count-check", formatter_class=fmt, help="Spearman(norm, true object count) on scenes")
    _image_args(p, source=DEFAULT_SCENES)
    p.add_argument("--fit-source", default=None,
                   help="also fit a least-squares map phi -> k on these scenes (e.g. data/fashion/scenes_train_lmdb) "
                        "and score round(prediction) == k and +-1 on --source")
    p.add_argument("--fit-max-images", type=_pos_int, default=2000, help="scenes of --fit-source used")
    p.add_argument("--ridge", type=cli_checks.nonneg_float, default=1e-3, help="ridge penalty of the least-squares map")

    p = sub.add_parser("units", formatter_class=fmt, help="live fc8 units and |phi|^2 per snapshot (issue 26)")
    _image_args(p, source=DEFAULT_SCENES)
    p.set_defaults(weights=None, max_images=200)
    for action in p._actions:   # --weights takes several snapshots here
        if action.dest == "weights":
            action.nargs, action.help = "+", ".caffemodel files (e.g. every snapshot of a run)"
    p.add_argument("--init-solver", default=None,
                   help="also the iteration-0 net of this solver (its net's fillers drawn with its random_seed)")

    p = sub.add_parser("log", formatter_class=fmt, help="training curves from a Caffe log")
    p.add_argument("--log", required=True, help="Caffe training log (the stderr of caffe train)")
    p.add_argument("--out", default=None, help="output folder (default runs/analysis/log)")
    p.add_argument("--margin", type=cli_checks.positive_float, default=10.0, help="M of the loss (for the trivial-solution warning)")
    return ap


COMMANDS = {"table5": cmd_table5, "mean-vector": cmd_mean_vector, "norm-ranking": cmd_norm_ranking,
            "crop-scale": cmd_crop_scale, "neighbours": cmd_neighbours, "neurons": cmd_neurons,
            "count-check": cmd_count_check, "units": cmd_units, "log": cmd_log}


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:  # the output folder, before any work
        if getattr(args, "out", None):
            cli_checks.writable_dir(args.out, "--out")
    except cli_checks.PathError as e:
        print("error: %s" % e, file=sys.stderr)
        return 2
    print("analyze.py %s: %s" % (args.cmd, ", ".join("%s=%s" % (k, v) for k, v in sorted(vars(args).items()))))
    t0 = time.time()
    try:
        res = COMMANDS[args.cmd](args)
    except (features.AnalysisError, features.LmdbError) as e:
        print("error: %s" % e, file=sys.stderr)
        return 2
    print("done in %.1f s" % (time.time() - t0))
    return 0 if res is not None else 1


if __name__ == "__main__":
    sys.exit(main())
