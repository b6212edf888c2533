"""The study's evaluation stage: every number of the report, from library calls of this repository
(ltc.analysis.subcommands, ltc.surgery, ltc.probe), each logged in OUT/commands.txt as the command
line that computes the same (tools/analyze.py, tools/port_weights.py, tools/linear_probe.py)."""
import argparse
import json
import os
import subprocess
import time

from ltc import REPO
from ltc.study.common import (FIXED_ITEM, FIXED_SCENES, ITEMS_VAL, PHOTO_SOLVER, PHOTOS_STUDY_TRAIN, PHOTOS_TEST,
                              PROBE_LAYERS, PROBE_PER_CLASS, PROBE_TRAIN, RUNS, SCENES_TRAIN, SCENES_VAL,
                              TRAJECTORY_EVERY, VIEWS_TEST, VIEWS_TRAIN, StudyError, cli_args, models, random_seed, solver)
from ltc.study.report import train_partner
from ltc.study.train import save_random_init


def final_model(solver_path, iteration=None):
    s = solver(solver_path)
    snaps = models(s.snapshot_prefix)
    it = iteration if iteration is not None else s.max_iter
    if it not in snaps:
        raise StudyError("no snapshot at iteration %d for %s (have %s); train first"
                         % (it, solver_path, sorted(snaps) or "none"))
    return os.path.relpath(snaps[it], REPO), it


def _json(path):
    with open(path) as f:
        return json.load(f)


def tail_means(rows, prefix, names, last=5):
    """Mean of the last ``last`` rows' ``<prefix>_<name>`` values (the displayed train outputs)."""
    out = {}
    for n in names:
        key = "%s_%s" % (prefix, n) if prefix else n
        vals = [r[key] for r in rows if key in r][-last:]
        out[n] = sum(vals) / len(vals) if vals else None
    return out


# ----------------------------------------------------------------------------- the steps
def analyze(runner, sub, out, reuse=True, **options):
    """``tools/analyze.py sub --option value ... --out out`` as a library call (ltc.analysis.subcommands);
    reused when its JSON is newer than its input files (``reuse``); returns that JSON."""
    from ltc.analysis import subcommands
    args = [sub] + cli_args(**options) + ["--out", out]
    json_path = os.path.join(out, "%s.json" % {"mean-vector": "mean_vector", "count-check": "count_check"}.get(sub, sub))

    def run():
        res = subcommands.COMPUTE[sub](**options)
        os.makedirs(os.path.join(REPO, out), exist_ok=True)
        subcommands.WRITE[sub](os.path.join(REPO, out), res, " ".join([os.path.join(REPO, "tools/analyze.py")] + args))
    runner.call("tools/analyze.py", args, run, done=json_path if reuse else None)
    return _json(os.path.join(REPO, json_path))


def port_weights(runner, weights, ported, fold_std_lmdb):
    """``tools/port_weights.py WEIGHTS PORTED --fold-std LMDB`` as a library call (ltc.surgery), with
    that tool's defaults for every other --fold-std option (the same argument group)."""
    from ltc import surgery

    def run():
        ap = argparse.ArgumentParser()
        surgery.add_fold_std_arguments(ap, "fold")
        fold = surgery.fold_std_from_arguments(ap.parse_args(["--fold-std", os.path.join(REPO, fold_std_lmdb)]))
        os.makedirs(os.path.dirname(os.path.join(REPO, ported)), exist_ok=True)
        surgery.port(os.path.join(REPO, weights), os.path.join(REPO, ported), keep_head=False, fold_std=fold)
    runner.call("tools/port_weights.py", [weights, ported, "--fold-std", fold_std_lmdb], run, done=ported)


def linear_probe(runner, ported, train_lmdb, val_lmdb, iters, seed, val_images, out_dir, csv):
    """``tools/linear_probe.py --model counting=PORTED --random-init ...`` as a library call (ltc.probe)."""
    from ltc import probe
    args = (["--model", "counting=" + ported, "--random-init"]
            + cli_args(train_lmdb=train_lmdb, val_lmdb=val_lmdb, iters=iters, seed=seed, val_images=val_images,
                       out_dir=out_dir, csv=csv))
    runner.call("tools/linear_probe.py", args,
                lambda: probe.linear_probe(models=[("counting", ported)], random_init=True, train_lmdb=train_lmdb,
                                           val_lmdb=val_lmdb, iters=iters, seed=seed, val_images=val_images,
                                           out_dir=out_dir, csv_path=os.path.join(REPO, csv)),
                done=csv)


# ----------------------------------------------------------------------------- evaluate
def evaluate(runner, out, seeds=(1701, 1702), probe_iters=200, per_class=PROBE_PER_CLASS, table5_images=200,
             trajectory_images=200, trajectory_every=TRAJECTORY_EVERY, main_solver=RUNS[0][1],
             single_solver=RUNS[1][1], iteration=None, extra_prefixes=(), probe_val_images=0):
    """Every analysis of the study; returns the results dict (also OUT/results.json).

    iteration: evaluate this snapshot of the main run instead of its last one; extra_prefixes:
    snapshot prefixes of earlier legs of the main run (a --resume source) for the norm trajectory,
    which takes every snapshot up to ``trajectory_every`` iterations, then its multiples (and the
    evaluated snapshot).
    """
    res = {}
    os.makedirs(os.path.join(REPO, out), exist_ok=True)
    weights, it = final_model(main_solver, iteration)
    res["main"] = dict(weights=weights, iteration=it, solver=main_solver, partner=train_partner(main_solver))
    ms = solver(main_solver)
    log_path = os.path.join(os.path.dirname(ms.snapshot_prefix), "train.log")
    legs = [os.path.join(os.path.dirname(p), "train.log") for p in extra_prefixes]
    if legs:   # one log for the curves: the earlier legs, then this run's (caffe resumes where they stopped)
        merged = os.path.join(out, "train_all.log")
        with open(os.path.join(REPO, merged), "w") as f:
            for leg in legs + [log_path]:
                with open(os.path.join(REPO, leg), errors="replace") as g:
                    f.write(g.read())
        runner.note(["cat"] + legs + [log_path, ">", merged])
        log_path = merged

    # curves + loss terms at the end + TEST on the held-out photos
    lg = analyze(runner, "log", os.path.join(out, "log"), reuse=False, log=log_path)
    names = ("loss", "count_term", "contrast_term", "hinge_active", "norm_dx")
    res["train_end"] = dict(tail_means([dict(r, train_loss=r["loss"]) for r in lg["train"]], "train", names),
                            iterations=[r["iteration"] for r in lg["train"]][-5:])
    tests = [r for r in lg["test"] if r.get("net", 0) == 0]
    res["test_photos"] = dict(iteration=tests[-1]["iteration"], **{n: tests[-1].get("test_" + n) for n in names}) \
        if tests else None
    res["test_photos_first"] = dict(iteration=tests[0]["iteration"], loss=tests[0].get("test_loss")) if tests else None
    res["log_warnings"] = lg.get("warnings", [])

    # counting: Spearman, least-squares map, norm-vs-k figure
    cc = analyze(runner, "count-check", os.path.join(out, "count_check"), weights=weights, source=SCENES_VAL,
                 fit_source=SCENES_TRAIN, max_images=500)
    res["count_check"] = dict(spearman=cc["spearman"], pearson=cc["pearson"], n=cc["n_images"],
                              per_count=cc["per_count"], count_map=cc["count_map"])
    # norm trajectory: Spearman of the snapshots every trajectory_every iterations, on the first scenes
    traj = []
    snaps = {}
    for prefix in list(extra_prefixes) + [ms.snapshot_prefix]:
        snaps.update(models(prefix))
    for i, path in sorted(snaps.items()):
        if i > it or (i % trajectory_every and i != it and i > trajectory_every):
            continue
        j = analyze(runner, "count-check", os.path.join(out, "trajectory", "iter_%d" % i),
                    weights=os.path.relpath(path, REPO), source=SCENES_VAL, max_images=trajectory_images)
        traj.append(dict(iteration=i, spearman=j["spearman"],
                         mean_norm=sum(p["mean"] * p["count"] for p in j["per_count"]) / j["n_images"],
                         norm_k0=j["per_count"][0]["mean"], norm_kmax=j["per_count"][-1]["mean"]))
    res["trajectory"] = traj

    # Fig. 3 on the held-out photos
    mv = analyze(runner, "mean-vector", os.path.join(out, "mean_vector"), weights=weights, source=PHOTOS_TEST)
    res["mean_vector"] = {k: mv.get(k) for k in ("n_images", "n_dims", "n_nonzero", "n_above_threshold",
                                                 "threshold", "n_above_rel", "rel_threshold", "max_mean",
                                                 "mean_norm")}

    # dead units: fc8 entries never active on the val scenes (a diagnosis when counting stays weak)
    mv = analyze(runner, "mean-vector", os.path.join(out, "mean_vector_scenes"), weights=weights, source=SCENES_VAL,
                 max_images=500)

    # control: the same count check and least-squares map on the untrained net (same init seed)
    rand = os.path.join(out, "random_init", "counting_random_init.caffemodel")
    if not os.path.isfile(os.path.join(REPO, rand)):
        runner.note(["ltc.study.save_random_init", main_solver, rand])
        save_random_init(ms.net, os.path.join(REPO, rand), seed=random_seed(main_solver))
    cr = analyze(runner, "count-check", os.path.join(out, "count_check_random_init"), weights=rand, source=SCENES_VAL,
                 fit_source=SCENES_TRAIN, max_images=500)
    res["count_check_random_init"] = dict(spearman=cr["spearman"], count_map=cr["count_map"], weights=rand)
    res["fc8_scenes"] = dict(n_images=mv["n_images"], n_dims=mv["n_dims"], n_ever_active=mv["n_nonzero"],
                             n_above_threshold=mv["n_above_threshold"], mean_norm=mv["mean_norm"])

    # Table 5 at this scale: the mixed model at the single-method model's last iteration
    try:
        single_w, single_it = final_model(single_solver)
        mixed_w = snaps.get(single_it)
        if mixed_w is None:
            raise StudyError("the main run has no snapshot at iteration %d to pair with %s" % (single_it, single_w))
        mixed_w, missing = os.path.relpath(mixed_w, REPO), None
        pair = dict(weights=[mixed_w, single_w], train_methods=["mixed", "linear"])
    except StudyError as e:   # the single-method run is not trained: the mixed row alone, said so
        single_it, missing = it, str(e)
        pair = dict(weights=[weights], train_methods=["mixed"])
    t5 = analyze(runner, "table5", os.path.join(out, "table5"), **pair, source=SCENES_VAL, max_images=table5_images)
    res["table5"] = dict(iteration=single_it, rows=t5["train_methods"], matrix=t5["matrix"], std=t5["std"],
                         test_methods=t5["test_methods"], table=t5["table"], n_images=t5["n_images"],
                         single_solver=single_solver, missing=missing)

    # linear probe: counting conv1-5 against random init, same probe, data, seeds
    probe_train = PROBE_TRAIN % per_class
    ported = os.path.join(out, "probe", "caffenet_counting.caffemodel")
    port_weights(runner, weights, ported, probe_train)
    csvs = []
    for seed in seeds:
        csvs.append(os.path.join(out, "probe", "seed_%d" % seed, "linear_probe.csv"))
        if not (runner.reuse and os.path.isfile(os.path.join(REPO, csvs[-1]))
                and os.path.getmtime(os.path.join(REPO, csvs[-1])) > os.path.getmtime(os.path.join(REPO, ported))):
            if os.path.exists(os.path.join(REPO, csvs[-1])):
                os.remove(os.path.join(REPO, csvs[-1]))
        linear_probe(runner, ported, probe_train, ITEMS_VAL, probe_iters, seed, probe_val_images,
                     os.path.join(out, "probe", "seed_%d" % seed), csvs[-1])
    res["probe"] = probe_summary([os.path.join(REPO, c) for c in csvs])
    res["probe"].update(train_lmdb=probe_train, val_lmdb=ITEMS_VAL, iters=probe_iters, seeds=list(seeds))

    update_results(out, **res)
    return res


def probe_summary(csv_paths):
    """{model: {layer: (mean, spread = max - min, values)}} over the rows (seeds) of linear_probe CSVs."""
    import csv
    acc = {}
    for csv_path in [csv_paths] if isinstance(csv_paths, str) else csv_paths:
        with open(csv_path) as f:
            for row in csv.DictReader(f):
                for layer in PROBE_LAYERS:
                    acc.setdefault(row["model"], {}).setdefault(layer, []).append(float(row[layer]))
    out = {}
    for model, layers in acc.items():
        out[model] = {l: dict(mean=sum(v) / len(v), spread=max(v) - min(v), values=v) for l, v in layers.items()}
    if "counting" in out and "random" in out:
        out["gain"] = {l: out["counting"][l]["mean"] - out["random"][l]["mean"] for l in PROBE_LAYERS}
    return out


# ----------------------------------------------------------------------------- the photo run (issue 27)
def fixed_scenes(runner):
    """The fixed-size, single-tint scenes (every item FIXED_ITEM px and gray), built when missing."""
    from ltc import fashion
    if not os.path.isfile(os.path.join(REPO, FIXED_SCENES, "scenes_val_lmdb", "data.mdb")):
        runner.call("data_prep/fashion_scenes.py", ["--what", "scenes", "--min-item", FIXED_ITEM, "--max-item",
                                                    FIXED_ITEM, "--gray", "--out-dir", FIXED_SCENES],
                    lambda: fashion.build_testbed(out_dir=os.path.join(REPO, FIXED_SCENES), what="scenes",
                                                  min_item=FIXED_ITEM, max_item=FIXED_ITEM, gray=True))
    return os.path.join(FIXED_SCENES, "scenes_train_lmdb"), os.path.join(FIXED_SCENES, "scenes_val_lmdb")


def domain_probe(runner, weights, out_dir, dataset="fashion", per_class=(10, 100, 1000)):
    """``tools/domain_probe.py --model counting=WEIGHTS ...`` as a library call (ltc.domain_probe); None
    for elpv without its optional package."""
    from ltc import domain_probe as dp
    argv = ["--model", "counting=" + weights, "--dataset", dataset, "--per-class"] + [str(n) for n in per_class] \
        + ["--out-dir", out_dir]
    done = os.path.join(out_dir, dataset, "gains.json")
    # the folder keeps the random inits' features for any model, so gains.json may be another model's:
    # reuse it only when it is this model's (and newer than it: Runner.call)
    prev = _json(os.path.join(REPO, done)) if os.path.isfile(os.path.join(REPO, done)) else None
    same = prev is not None and (prev.get("models") or {}).get("counting") == weights
    res = runner.call("tools/domain_probe.py", argv,
                      lambda: dp.run(dp.arguments(argv), command="python tools/domain_probe.py " + " ".join(argv)),
                      done=done if same else None)
    if res is None and same:   # reused (or a dry run): this model's earlier result
        res = prev
    if res is not None:
        res.pop("table", None)
    return res


def evaluate_photos(runner, out, solver_path=PHOTO_SOLVER, iteration=None, probe=True):
    """The photo run's numbers: held-out views (TEST passes of the training log: counting term, hinge,
    |phi(Dx)|), the mean counting vector on them (Fig. 3), counting on the mixed and on the fixed-size
    gray scenes, and the in-domain probes (Fashion items; elpv when installed) against random inits.
    Returns the dict stored as results.json's "photos"."""
    weights, it = final_model(solver_path, iteration)
    s = solver(solver_path)
    res = dict(weights=weights, iteration=it, solver=solver_path, partner=train_partner(solver_path),
               train_lmdb=PHOTOS_STUDY_TRAIN, test_lmdb=VIEWS_TEST)
    sub = os.path.join(out, "photos")
    log_path = os.path.join(os.path.dirname(s.snapshot_prefix), "train.log")
    lg = analyze(runner, "log", os.path.join(sub, "log"), reuse=False, log=log_path)
    names = ("loss", "count_term", "contrast_term", "hinge_active", "norm_dx")
    # a resumed run tests again at the iteration it resumes from: one row per iteration (the last)
    tests = {r["iteration"]: r for r in lg["test"] if r.get("net", 0) == 0 and r["iteration"] <= it}
    res["test_views"] = [dict(iteration=i, **{n: tests[i].get("test_" + n) for n in names}) for i in sorted(tests)]
    res["train_end"] = tail_means([dict(r, train_loss=r["loss"]) for r in lg["train"] if r["iteration"] <= it],
                                  "train", names)
    mv = analyze(runner, "mean-vector", os.path.join(sub, "mean_vector"), weights=weights, source=VIEWS_TEST,
                 max_images=1000)
    res["mean_vector"] = {k: mv.get(k) for k in ("n_images", "n_dims", "n_nonzero", "n_above_threshold",
                                                 "threshold", "max_mean", "mean_norm")}
    cc = analyze(runner, "count-check", os.path.join(sub, "count_check"), weights=weights, source=SCENES_VAL,
                 fit_source=SCENES_TRAIN, max_images=500)
    res["count_check"] = dict(spearman=cc["spearman"], n=cc["n_images"], count_map=cc["count_map"])
    fit, val = fixed_scenes(runner)
    fx = analyze(runner, "count-check", os.path.join(sub, "count_check_fixed"), weights=weights, source=val,
                 fit_source=fit, max_images=500)
    res["count_check_fixed"] = dict(spearman=fx["spearman"], n=fx["n_images"], count_map=fx["count_map"],
                                    source=val, item=FIXED_ITEM)
    res["gap"] = photo_gap(runner, solver_path, sub, upto=it)
    if probe:
        res["domain_probe"] = domain_probe(runner, weights, os.path.join(sub, "domain_probe"))
        res["elpv_probe"] = domain_probe(runner, weights, os.path.join(sub, "domain_probe"), dataset="elpv",
                                         per_class=(10, 100, 500))
    return res


TEST_OUTPUTS = ("count_term", "contrast_term", "hinge_active", "norm_dx", "loss")


def parse_caffe_test(text):
    """The final means of a ``caffe test`` run ({output name: value}) from its glog lines
    ``caffe.cpp:...] name = value`` (the loss line carries ``(* 1 = ...)`` after the value)."""
    out = {}
    for line in text.splitlines():
        if "caffe.cpp" not in line or "] " not in line or " = " not in line:
            continue
        name, _, rest = line.split("] ", 1)[1].partition(" = ")
        name = name.strip()
        if name in TEST_OUTPUTS:
            out[name] = float(rest.split()[0])
    return out


def source_test(runner, train_val, weights, source, out_prototxt, iterations):
    """``caffe test`` of ``train_val`` with its TEST data layer reading ``source`` instead: the TEST
    phase's counting term, contrast term, hinge and |phi(Dx)| on any LMDB of the project format
    (same seed, batch and views as the training log's TEST passes). Returns {output: mean}."""
    from google.protobuf import text_format
    from ltc.model_checks import ModelError, read_net_prototxt
    try:
        net = read_net_prototxt(os.path.join(REPO, train_val))
    except ModelError as e:
        raise StudyError(str(e))
    tests = [l for l in net.layer if l.type == "Python" and any(r.phase == 1 for r in l.include)]  # 1 = TEST
    if len(tests) != 1:
        raise StudyError("%s: expected one TEST-phase Python data layer, found %d" % (train_val, len(tests)))
    params = json.loads(tests[0].python_param.param_str)
    params["source"] = source
    tests[0].python_param.param_str = json.dumps(params, sort_keys=True)
    text = ("# %s with its TEST data layer reading %s (ltc/study/evaluate.py source_test)\n"
            % (train_val, source)) + text_format.MessageToString(net)
    argv = [runner.caffe, "test", "-model", out_prototxt, "-weights", weights, "-iterations", str(iterations)]
    log_path = os.path.splitext(out_prototxt)[0] + ".log"
    if runner.reusable(log_path, [weights]):
        with open(os.path.join(REPO, log_path)) as f:
            res = parse_caffe_test(f.read())
        if set(TEST_OUTPUTS) <= set(res):
            runner.note(argv + ["# reused " + log_path])
            return res
    line = runner.note(argv)
    if runner.dry:
        return None
    os.makedirs(os.path.dirname(os.path.join(REPO, out_prototxt)), exist_ok=True)
    with open(os.path.join(REPO, out_prototxt), "w") as f:
        f.write(text)
    t0 = time.time()
    env = dict(os.environ, GLOG_logtostderr="1", GLOG_minloglevel="0")  # the means are INFO lines
    p = subprocess.run(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    with open(os.path.join(REPO, log_path), "w") as f:
        f.write(p.stdout)
    res = parse_caffe_test(p.stdout)
    if p.returncode != 0 or not set(TEST_OUTPUTS) <= set(res):
        raise StudyError("%s: caffe test exited with %d or printed no outputs; see %s" % (line, p.returncode, log_path))
    runner.log_time(t0)
    return res


def photo_gap(runner, solver_path, sub, upto=None):
    """The photo run's TEST-phase outputs at every snapshot on the training views (the first 1,000 of
    them), the held-out views and the val scenes: whether the held-out counting term is a gap between
    seen and unseen photos (overfitting) or high on the seen views as well (underfitting).
    Every snapshot up to iteration ``upto`` (all without it). Returns {source name: [{iteration, outputs...}]}."""
    s = solver(solver_path)
    snaps = models(s.snapshot_prefix)
    its = [i for i in sorted(snaps) if upto is None or i <= upto]
    batches = s.test_iter[0] if len(s.test_iter) else 20
    rows = {}
    for name, source in (("train_views", VIEWS_TRAIN), ("heldout_views", VIEWS_TEST), ("val_scenes", SCENES_VAL)):
        rows[name] = []
        for it in its:
            weights = os.path.relpath(snaps[it], REPO)
            res = source_test(runner, s.net, weights, source,
                              os.path.join(sub, "gap", "%s_iter%d.prototxt" % (name, it)), batches)
            if res is not None:
                rows[name].append(dict(iteration=it, **res))
    return rows


def update_results(out, **parts):
    """Merge ``parts`` into OUT/results.json (one run's evaluation keeps the others'); returns the dict."""
    path = os.path.join(REPO, out, "results.json")
    res = _json(path) if os.path.isfile(path) else {}
    res.update(parts)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(res, f, indent=1, default=float)
    return res
