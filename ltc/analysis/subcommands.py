"""The analyses behind tools/analyze.py's subcommands, callable from Python (ltc.study uses them).

For each subcommand ``X`` (table5, mean_vector, norm_ranking, crop_scale, neighbours, neurons,
count_check, units, log):

  X(**options)              computes; returns a result dict (no printing, no files). Its
                            keyword arguments are the subcommand's options, with the same
                            defaults (tests/test_analysis.py compares them with the parser's)
  write_X(out, res, command)  writes the subcommand's CSV and JSON files and its figures
                            (ltc/analysis/plots.py) into ``out``; returns their paths.
                            ``command`` is the command line recorded in the JSON.

tools/analyze.py parses the options, prints the headline numbers of each result and calls the
writer; the numbers printed and written are those of the result dict.
"""
import os

import numpy as np

from ltc import params
from ltc.analysis import caffelog, countmap, features, metrics, plots, report, trainlog, units
from ltc.analysis import table5 as t5

DEFAULT_DEPLOY = "prototxt/deploy.prototxt"
DEFAULT_WEIGHTS = "runs/demo/counting_demo_iter_600.caffemodel"
DEFAULT_SOURCE = "data/sample/train_lmdb"
DEFAULT_QUERIES = "data/sample/val_lmdb"
DEFAULT_SCENES = "data/fashion/scenes_val_lmdb"
DEFAULT_MARGIN = params.MARGIN   # M of the loss (ltc/knobs.py), for the trivial-solution warning of ``log``

# the options every image subcommand shares, with their defaults
IMAGE_OPTIONS = dict(deploy=DEFAULT_DEPLOY, weights=DEFAULT_WEIGHTS, source=DEFAULT_SOURCE, max_images=1000,
                     batch=64, view="full", crop=params.CROP_SIZE, interp="area", color_mode="color", seed=1701)

# the image subcommands whose defaults differ from IMAGE_OPTIONS
IMAGE_DEFAULTS = {"neighbours": dict(source=DEFAULT_QUERIES), "count-check": dict(source=DEFAULT_SCENES),
                  "units": dict(source=DEFAULT_SCENES, max_images=200, weights=None)}

AnalysisError = features.AnalysisError


def _image_features(o, desc, phi=None):
    """(phi, images, F, labels) for the image options ``o`` (a dict of IMAGE_OPTIONS' keys)."""
    phi = phi or features.CaffeFeatures(o["deploy"], o["weights"], batch=o["batch"])
    images = features.ImageSet(o["source"], o["max_images"], who=desc)
    F, labels = features.extract_features(phi, images, view=o["view"], crop=o["crop"], interp=o["interp"],
                                          color_mode=o["color_mode"], chunk=o["batch"], desc=desc)
    return phi, images, F, labels


def _options(given, name):
    o = dict(IMAGE_OPTIONS, **IMAGE_DEFAULTS.get(name, {}))
    unknown = set(given) - set(o)
    if unknown:
        raise TypeError("unknown options: %s" % ", ".join(sorted(unknown)))
    o.update(given)
    return o


def defaults(name):
    """Every option of subcommand ``name`` with its default (None: required; the image options included)."""
    import inspect
    sig = inspect.signature(COMPUTE[name]).parameters
    out = {k: None if p.default is p.empty else p.default for k, p in sig.items()
           if k != "out" and p.kind is not p.VAR_KEYWORD}
    if any(p.kind is p.VAR_KEYWORD for p in sig.values()):
        out = dict(dict(IMAGE_OPTIONS, **IMAGE_DEFAULTS.get(name, {})), **out)
    return out


def caption(images, i, extra):
    name = images.names[i]
    name = name if len(name) <= 22 else "..." + name[-19:]
    return "%s\n%s" % (name, extra)


# ----------------------------------------------------------------------------- table5
def table5(weights=None, train_methods=("mixed",), deploy=DEFAULT_DEPLOY, deploys=None, source=DEFAULT_SOURCE,
           max_images=1000, batch=64, crop=params.CROP_SIZE, gray_prob=params.GRAY_PROB, seed=1701):
    """Table 5 (eq. 6) of one model per training method."""
    if weights is None:
        raise AnalysisError("table5 needs --weights (one .caffemodel per training method)")
    weights, train_methods = list(weights), list(train_methods)
    if len(train_methods) != len(weights):
        raise AnalysisError("table5: %d --weights but %d --train-methods; give one training method per model "
                            "(linear, cubic, area, lanczos, mixed)" % (len(weights), len(train_methods)))
    deploys = deploys or [deploy] * len(weights)
    if len(deploys) != len(weights):
        raise AnalysisError("table5: --deploys needs one prototxt per --weights file")
    models = [(m, features.CaffeFeatures(d, w, batch=batch)) for m, d, w in zip(train_methods, deploys, weights)]
    images = features.ImageSet(source, max_images, who="table5")
    res = t5.table5(models, images, crop=crop, seed=seed, gray_prob=gray_prob)
    res.update(table=t5.format_table5(train_methods, res["matrix"], res["std"]), train_methods=train_methods,
               weights=weights, source=images.source, n_images=len(images), crop=crop, seed=seed, gray_prob=gray_prob,
               linear_equals_area=bool(np.allclose(res["matrix"][:, 0], res["matrix"][:, 2], rtol=1e-6, atol=0)))
    return res


def paper_table5():
    """The paper's Table 5, formatted like ours."""
    paper = list(features.TRAIN_METHODS)
    return t5.format_table5(paper, [t5.PAPER_TABLE5[m][:5] for m in paper], [t5.PAPER_TABLE5[m][5] for m in paper])


def write_table5(out, res, command):
    rows = []
    for r, m in enumerate(res["train_methods"]):
        row = dict(train_method=m, weights=res["weights"][r], std=res["std"][r], denominator=res["denom"][r])
        row.update({"test_" + t: res["matrix"][r, j] for j, t in enumerate(features.TEST_METHODS)})
        rows.append(row)
    files = [report.write_csv(os.path.join(out, "table5.csv"), rows, ["train_method"]
                              + ["test_" + t for t in features.TEST_METHODS] + ["std", "denominator", "weights"])]
    files.append(report.write_json(os.path.join(out, "table5.json"), dict(
        command=command, source=res["source"], n_images=res["n_images"], crop=res["crop"], seed=res["seed"],
        gray_prob=res["gray_prob"], n_gray=int(res["gray"].sum()), train_methods=res["train_methods"],
        test_methods=features.TEST_METHODS, weights=res["weights"], matrix=res["matrix"], std=res["std"],
        numerators=res["numer"], denominators=res["denom"], table=res["table"], paper_table5=t5.PAPER_TABLE5,
        std_convention="sample std (ddof=1) over the four single-method test columns",
        mixed_denominator="for a mixed-trained model: |phi(D x)|^2 averaged over the four methods")))
    files.append(plots.table5_figure(os.path.join(out, "table5.png"), res["matrix"], res["std"],
                                     res["train_methods"], features.TEST_METHODS, res["n_images"]))
    return files


# ----------------------------------------------------------------------------- mean-vector (Fig. 3)
def mean_vector(threshold=0.01, **options):
    o = _options(options, "mean-vector")
    phi, images, F, _ = _image_features(o, "mean-vector")
    return dict(stats=metrics.mean_vector_stats(F, threshold), threshold=threshold, dim=phi.dim,
                source=images.source, n_images=len(images), weights=o["weights"])


def write_mean_vector(out, res, command):
    st = res["stats"]
    rows = [dict(dim=d, mean=st["mean"][d], std=st["std"][d], frac_active=st["frac_active"][d])
            for d in range(res["dim"])]
    files = [report.write_csv(os.path.join(out, "mean_vector.csv"), rows, ["dim", "mean", "std", "frac_active"])]
    summary = {k: v for k, v in st.items() if k not in ("mean", "std", "frac_active")}
    top = np.argsort(-st["mean"], kind="mergesort")[:20]
    summary.update(command=command, source=res["source"], weights=res["weights"],
                   top_dims=[dict(dim=int(d), mean=st["mean"][d]) for d in top])
    files.append(report.write_json(os.path.join(out, "mean_vector.json"), summary))
    files.append(plots.mean_vector_figure(os.path.join(out, "mean_vector.png"), st, res["n_images"], res["threshold"]))
    return files


# ----------------------------------------------------------------------------- norm-ranking (Fig. 4)
def norm_ranking(k=16, **options):
    o = _options(options, "norm-ranking")
    phi, images, F, _ = _image_features(o, "norm-ranking")
    k_used = min(k, max(1, len(images) // 2))
    top, low, norms = metrics.rank_by_norm(F, k_used)
    return dict(images=images, k=k_used, k_asked=k, top=top, low=low, norms=norms)


def write_norm_ranking(out, res, command):
    images, norms, top, low = res["images"], res["norms"], res["top"], res["low"]
    order = np.lexsort((np.arange(len(norms)), -norms))
    rows = [dict(rank=r + 1, index=int(i), key=images.names[i], norm=norms[i]) for r, i in enumerate(order)]
    files = [report.write_csv(os.path.join(out, "norms.csv"), rows, ["rank", "index", "key", "norm"])]
    files.append(report.write_json(os.path.join(out, "norm_ranking.json"), dict(
        command=command, source=images.source, n_images=len(images),
        highest=[dict(index=int(i), key=images.names[i], norm=norms[i]) for i in top],
        lowest=[dict(index=int(i), key=images.names[i], norm=norms[i]) for i in low],
        norm_min=norms.min(), norm_median=np.median(norms), norm_max=norms.max())))
    ncols = int(np.ceil(np.sqrt(res["k"])))
    for name, sel in (("highest", top), ("lowest", low)):
        files.append(plots.image_grid(os.path.join(out, "norm_%s.png" % name), [images.load(i)[0] for i in sel],
                                      [caption(images, i, "norm %.3g" % norms[i]) for i in sel], ncols=ncols,
                                      title="Fig. 4: the %d images with the %s counting-vector norm" % (len(sel), name)))
    return files


# ----------------------------------------------------------------------------- crop-scale (Fig. 5-6)
def crop_scale(set_size=100, crops=10, min_area=0.5, max_area=0.95, bins=5, **options):
    o = _options(options, "crop-scale")
    phi, images, F, _ = _image_features(o, "crop-scale")
    top, low, norms = metrics.rank_by_norm(F, min(set_size, len(images) // 2))
    if len(top) < 1:
        raise AnalysisError("crop-scale needs at least 2 images, got %d" % len(images))
    from tqdm import tqdm
    s = phi.input_size
    rows = []
    sets = (("highest", top), ("lowest", low))
    bar = tqdm(total=(len(top) + len(low)) * crops, desc="crops", unit="crop")
    for set_name, sel in sets:
        for i in sel:
            img, _ = images.load(int(i))
            rng = np.random.default_rng([o["seed"], int(i)])
            views, boxes = [], []
            for c in range(crops):
                y0, x0, h, w = features.crop_box(rng, img.shape[0], img.shape[1], min_area, max_area)
                views.append(features.image_view(img[y0:y0 + h, x0:x0 + w], s, "full", interp=o["interp"]))
                boxes.append((y0, x0, h, w))
            x = np.concatenate([features.normalise_views([v], o["color_mode"] == "gray") for v in views])
            n = metrics.l2_norms(phi(x))
            for c, (y0, x0, h, w) in enumerate(boxes):
                rows.append(dict(set=set_name, index=int(i), key=images.names[i], crop=c, y0=y0, x0=x0, h=h, w=w,
                                 area=h * w / float(img.shape[0] * img.shape[1]), norm=n[c], image_norm=norms[i]))
            bar.update(crops)
    bar.close()
    edges = np.linspace(min_area, max_area, bins + 1)
    summary = dict(source=images.source, n_images=len(images), set_size=len(top), crops_per_image=crops,
                   area_range=[min_area, max_area], sets={})
    for set_name, _ in sets:
        a = np.array([r["area"] for r in rows if r["set"] == set_name])
        v = np.array([r["norm"] for r in rows if r["set"] == set_name])
        summary["sets"][set_name] = dict(bins=metrics.bin_stats(a, v, edges), spearman_area_norm=metrics.spearman(a, v),
                                         n_crops=len(a))
    return dict(summary=summary, rows=rows, images=images, top=top)


def write_crop_scale(out, res, command):
    summary, rows, images = dict(res["summary"]), res["rows"], res["images"]
    summary = dict(command=command, **summary)
    files = [report.write_csv(os.path.join(out, "crops.csv"), rows,
                              ["set", "index", "key", "crop", "y0", "x0", "h", "w", "area", "norm", "image_norm"]),
             report.write_json(os.path.join(out, "crop_scale.json"), summary)]
    files.append(plots.crop_scale_figure(os.path.join(out, "crop_scale.png"), summary["sets"], summary["set_size"]))
    # Fig. 5: the crops of the highest-norm image, by increasing area
    i = int(res["top"][0])
    img, _ = images.load(i)
    ex = sorted([r for r in rows if r["index"] == i and r["set"] == "highest"], key=lambda r: r["area"])
    crops = [img[r["y0"]:r["y0"] + r["h"], r["x0"]:r["x0"] + r["w"]] for r in ex]
    files.append(plots.image_grid(os.path.join(out, "crops_example.png"), crops,
                                  ["area %.2f\nnorm %.3g" % (r["area"], r["norm"]) for r in ex], ncols=len(crops),
                                  title="Fig. 5: crops of %s by increasing size" % images.names[i], cell=1.6))
    return files


# ----------------------------------------------------------------------------- neighbours (Fig. 7)
def neighbours(database=DEFAULT_SOURCE, queries=8, k=7, **options):
    o = _options(options, "neighbours")
    phi, images, F, _ = _image_features(o, "neighbours")
    if database:
        db = features.ImageSet(database, o["max_images"], who="neighbours database")
        Fd, _ = features.extract_features(phi, db, view=o["view"], crop=o["crop"], interp=o["interp"],
                                          color_mode=o["color_mode"], chunk=o["batch"], desc="database")
        same = os.path.realpath(db.source) == os.path.realpath(images.source)
    else:
        db, Fd, same = images, F, True
    rng = np.random.default_rng(o["seed"])
    nq = min(queries, len(images))
    q = np.sort(rng.choice(len(images), nq, replace=False))
    idx, dist = metrics.nearest_neighbours(F[q], Fd, k, exclude=list(q) if same else None)
    # a chance baseline: the mean distance from a query to the database
    mean_d = float(np.mean([np.sqrt(((Fd - F[qi]) ** 2).sum(1)).mean() for qi in q]))
    return dict(images=images, db=db, F=F, queries=q, idx=idx, dist=dist, mean_distance_to_database=mean_d)


def write_neighbours(out, res, command):
    images, db, F, q, idx, dist = (res[k] for k in ("images", "db", "F", "queries", "idx", "dist"))
    rows = []
    for a, qi in enumerate(q):
        for r in range(idx.shape[1]):
            rows.append(dict(query=int(qi), query_key=images.names[qi], rank=r + 1, neighbour=int(idx[a, r]),
                             neighbour_key=db.names[idx[a, r]], distance=dist[a, r]))
    files = [report.write_csv(os.path.join(out, "neighbours.csv"), rows,
                              ["query", "query_key", "rank", "neighbour", "neighbour_key", "distance"]),
             report.write_json(os.path.join(out, "neighbours.json"), dict(
                 command=command, source=images.source, database=db.source, queries=q, k=idx.shape[1],
                 neighbours=idx, distances=dist, mean_distance_to_database=res["mean_distance_to_database"]))]
    ims, caps, border = [], [], []
    for a, qi in enumerate(q):
        ims.append(images.load(int(qi))[0])
        caps.append(caption(images, qi, "query |f| %.3g" % np.sqrt((F[qi] ** 2).sum())))
        border.append("red")
        for r in range(idx.shape[1]):
            ims.append(db.load(int(idx[a, r]))[0])
            caps.append(caption(db, idx[a, r], "d %.3g" % dist[a, r]))
            border.append(None)
    files.append(plots.image_grid(os.path.join(out, "neighbours.png"), ims, caps, ncols=idx.shape[1] + 1,
                                  border=border, title="Fig. 7: queries (red) and nearest neighbours in counting space",
                                  cell=1.6))
    return files


# ----------------------------------------------------------------------------- neurons (Fig. 8)
def neurons(neurons=4, k=8, **options):
    o = _options(options, "neurons")
    phi, images, F, _ = _image_features(o, "neurons")
    top, mean = metrics.top_neurons(F, neurons)
    return dict(images=images, F=F, k=k, neurons=top, mean=mean,
                top_images={int(j): metrics.top_images(F, j, k) for j in top})


def write_neurons(out, res, command):
    images, F, mean = res["images"], res["F"], res["mean"]
    rows, ims, caps, labels = [], [], [], []
    for j in res["neurons"]:
        for r, i in enumerate(res["top_images"][int(j)]):
            rows.append(dict(neuron=int(j), neuron_mean=mean[j], rank=r + 1, index=int(i), key=images.names[i],
                             activation=F[i, j]))
            ims.append(images.load(int(i))[0])
            caps.append(caption(images, i, "%.3g" % F[i, j]))
        labels.append("neuron %d" % j)
    files = [report.write_csv(os.path.join(out, "neurons.csv"), rows,
                              ["neuron", "neuron_mean", "rank", "index", "key", "activation"]),
             report.write_json(os.path.join(out, "neurons.json"), dict(
                 command=command, source=images.source, n_images=len(images), neurons=res["neurons"],
                 neuron_means=mean[res["neurons"]], n_active=int((mean > 0).sum()), top=rows))]
    files.append(plots.image_grid(os.path.join(out, "neurons.png"), ims, caps, ncols=res["k"], row_labels=labels,
                                  title="Fig. 8: the %d images activating each of the %d most active neurons most"
                                        % (res["k"], len(res["neurons"])), cell=1.5))
    return files


# ----------------------------------------------------------------------------- count-check
def count_check(fit_source=None, fit_max_images=2000, ridge=1e-3, **options):
    """Spearman(|phi|, object count) on labelled scenes; with ``fit_source``, also the least-squares
    map phi -> k fitted there and scored on ``source``."""
    o = _options(options, "count-check")
    phi, images, F, labels = _image_features(o, "count-check")
    if any(lab is None for lab in labels):
        raise AnalysisError("count-check needs an LMDB whose labels are object counts (data/fashion/"
                            "scenes_*_lmdb); '%s' is a folder without labels" % images.source)
    k = np.array(labels, np.float64)
    if len(np.unique(k)) < 2:
        raise AnalysisError("count-check: every image of '%s' has the label %d, so there is no count to "
                            "rank against (Spearman would be nan); give an LMDB whose labels are object "
                            "counts (data/fashion/scenes_*_lmdb)" % (images.source, int(k[0])))
    norms = metrics.l2_norms(F)
    rho = metrics.spearman(norms, k)
    from scipy import stats
    sp = stats.spearmanr(norms, k)
    pr = stats.pearsonr(norms, k) if np.std(norms) > 0 and np.std(k) > 0 else None
    per_k = [dict(k=int(v), count=int((k == v).sum()), mean=norms[k == v].mean(), std=norms[k == v].std())
             for v in np.unique(k)]
    ustats = units.unit_stats(F)
    amplitudes = [units.foreground_amplitude(features.image_view(images.load(i)[0], phi.input_size, o["view"],
                                                                 o["crop"], o["interp"]),
                                             gray=o["color_mode"] == "gray") for i in range(len(images))]
    amp = units.amplitude_check(norms, k, amplitudes)
    fit, pred = None, None
    if fit_source:   # additivity: a least-squares map phi -> k fitted on other scenes
        _, fit_images, F_fit, fit_labels = _image_features(dict(o, source=fit_source, max_images=fit_max_images),
                                                           "count-check", phi=phi)
        if any(lab is None for lab in fit_labels):
            raise AnalysisError("--fit-source '%s' has no count labels" % fit_images.source)
        w, c = countmap.fit_count_map(F_fit, fit_labels, alpha=ridge)
        pred = countmap.predict_count(F, w, c)
        fit = dict(fit_source=fit_images.source, n_fit=len(fit_images), ridge=ridge,
                   train=countmap.count_scores(countmap.predict_count(F_fit, w, c), fit_labels),
                   **countmap.count_scores(pred, k))
    return dict(images=images, k=k, norms=norms, spearman=rho, spearman_scipy=float(sp.statistic),
                spearman_p=float(sp.pvalue), pearson=None if pr is None else float(pr.statistic), per_k=per_k,
                units=ustats, amplitude=amp, count_map=fit, predicted=pred, seed=o["seed"])


def write_count_check(out, res, command):
    images, k, norms, fit = res["images"], res["k"], res["norms"], res["count_map"]
    rows = [dict(index=i, key=images.names[i], count=int(k[i]), norm=norms[i]) for i in range(len(images))]
    if fit:
        for r, v in zip(rows, res["predicted"]):
            r["predicted_count"] = float(v)
    files = [report.write_csv(os.path.join(out, "count_check.csv"), rows,
                              ["index", "key", "count", "norm"] + (["predicted_count"] if fit else [])),
             report.write_json(os.path.join(out, "count_check.json"), dict(
                 command=command, source=images.source, n_images=len(images), spearman=res["spearman"],
                 spearman_scipy=res["spearman_scipy"], spearman_p=res["spearman_p"], pearson=res["pearson"],
                 per_count=res["per_k"], count_map=fit,
                 units={k_: v for k_, v in res["units"].items() if k_ != "active_fraction"},
                 amplitude=res["amplitude"]))]
    files.append(plots.count_check_figure(os.path.join(out, "count_check.png"), k, norms, res["per_k"],
                                          res["spearman"], res["seed"]))
    return files


# ----------------------------------------------------------------------------- units
def units_table(out, weights=None, init_solver=None, **options):
    """Live fc8 units and |phi|^2 of each of ``weights`` (and of ``init_solver``'s iteration-0 net,
    saved into ``out``) on ``source``."""
    o = _options(options, "units")
    weights = list(weights or [])
    if init_solver:
        from ltc import snapshots
        from ltc.study import save_random_init
        path = features.resolve_path(init_solver)
        if not os.path.isfile(path):
            raise AnalysisError("--init-solver '%s' does not exist (looked in %s)" % (init_solver, path))
        try:
            sp = snapshots.read_solver(path)
        except snapshots.SnapshotError as e:
            raise AnalysisError("--init-solver '%s' is not a solver prototxt: %s" % (path, e))
        init = os.path.join(out, "iter_0_seed%d.caffemodel" % sp.random_seed)
        save_random_init(sp.net, init, sp.random_seed)
        weights.insert(0, init)
    if not weights:
        raise AnalysisError("units needs --weights and/or --init-solver")
    images = features.ImageSet(o["source"], o["max_images"], who="units")
    rows = []
    for w in weights:
        phi = features.CaffeFeatures(o["deploy"], w, batch=o["batch"], log=None)
        F, labels = features.extract_features(phi, images, view=o["view"], crop=o["crop"], interp=o["interp"],
                                              color_mode=o["color_mode"], chunk=o["batch"], progress=False)
        st = units.unit_stats(F)
        row = dict(weights=w, **{k: v for k, v in st.items() if k != "active_fraction"})
        if all(lab is not None for lab in labels):
            row["spearman"] = metrics.spearman(metrics.l2_norms(F), labels)
        rows.append(row)
    return dict(images=images, rows=rows)


def write_units(out, res, command):
    rows, images = res["rows"], res["images"]
    return [report.write_csv(os.path.join(out, "units.csv"), rows, list(rows[0].keys())),
            report.write_json(os.path.join(out, "units.json"), dict(command=command, source=images.source,
                                                                   n_images=len(images), rows=rows))]


# ----------------------------------------------------------------------------- log
def log(log, margin=DEFAULT_MARGIN):
    """A Caffe training log parsed (ltc.analysis.caffelog), with the trivial-solution warnings."""
    path = features.resolve_path(log)
    if not os.path.isfile(path):
        raise AnalysisError("log '%s' does not exist (looked in %s); caffe writes its log to stderr: "
                            "caffe train ... 2> train.log" % (log, path))
    with open(path, errors="replace") as f:
        res = caffelog.parse_caffe_log(f.read())
    if not res["train"] and not res["test"]:
        raise AnalysisError("log '%s' holds no 'Iteration N ..., loss = ...' or 'Test net output' lines; is it a "
                            "Caffe training log (stderr of caffe train, written with GLOG_minloglevel=0)?" % path)
    warnings = [w for w in (trainlog.trivial_solution(res["train"], "train", margin),
                            trainlog.trivial_solution(res["test"], "test", margin)) if w]
    return dict(parsed=res, path=path, warnings=warnings, margin=margin)


def write_log(out, res, command):
    parsed = res["parsed"]
    files = [report.write_csv(os.path.join(out, "train.csv"), parsed["train"]),
             report.write_csv(os.path.join(out, "test.csv"), parsed["test"])]
    files.append(report.write_json(os.path.join(out, "log.json"), dict(command=command, log=res["path"],
                                                                       warnings=res["warnings"], **parsed)))
    files.append(plots.curves_figure(os.path.join(out, "curves.png"), parsed, res["margin"], res["warnings"],
                                     title=os.path.basename(res["path"])))
    return files


COMPUTE = {"table5": table5, "mean-vector": mean_vector, "norm-ranking": norm_ranking, "crop-scale": crop_scale,
           "neighbours": neighbours, "neurons": neurons, "count-check": count_check, "units": units_table, "log": log}
WRITE = {"table5": write_table5, "mean-vector": write_mean_vector, "norm-ranking": write_norm_ranking,
         "crop-scale": write_crop_scale, "neighbours": write_neighbours, "neurons": write_neurons,
         "count-check": write_count_check, "units": write_units, "log": write_log}
