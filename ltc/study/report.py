"""The study's report: OUT/report.md from the results dict (ltc/study/evaluate.py), the goals it
meets or misses, and the closing lines of `make demo`."""
import json
import os
import textwrap

from ltc import REPO, nets
from ltc.study.common import GOALS, PROBE_LAYERS, solver


def goals(res):
    """[(goal, measured, met)] of the issues' "Must show" targets: the main run's, then the photo run's."""
    return (main_goals(res) if "main" in res else []) + (photo_goals(res["photos"]) if "photos" in res else [])


def photo_goals(ph):
    """The photo run's goals (issue 27): held-out views, fixed-size scenes, the in-domain probe."""
    g = []
    tv = ph.get("test_views") or []
    if tv:
        t = tv[-1]
        g.append(("photos: counting term on the held-out views <= M/4 = %.1f" % GOALS["heldout_count_term"],
                  "%.3g" % t["count_term"], t["count_term"] <= GOALS["heldout_count_term"]))
        g.append(("photos: hinge active on a minority of held-out views (< 50 %)", "%.0f %%" % (100 * t["hinge_active"]),
                  t["hinge_active"] < 0.5))
        g.append(("photos: |phi(Dx)| on held-out views well above 0 (>= 1)", "%.3g" % t["norm_dx"], t["norm_dx"] >= 1.0))
    fx = (ph.get("count_check_fixed") or {}).get("count_map")
    if fx:
        g.append(("photos: fixed-size gray scenes, exact k >= %d %%" % (100 * GOALS["fixed_exact"]),
                  "%.1f %%" % (100 * fx["exact"]), fx["exact"] >= GOALS["fixed_exact"]))
    dp = ph.get("domain_probe")
    if dp:
        n = max(dp["per_class"])
        for layer in ("conv3", "conv4", "conv5"):
            e = dp["gains"]["%d/%s" % (n, layer)]
            g.append(("photos: in-domain probe %s at %d/class: counting - random >= +%.0f, interval above 0"
                      % (layer, n, GOALS["probe_margin"]), "%+.2f [%+.2f, %+.2f]" % (e["mean"], e["lo"], e["hi"]),
                      e["mean"] >= GOALS["probe_margin"] and e["lo"] > 0))
    return g


def main_goals(res):
    """The main run's goals (the counting study)."""
    g = []
    cc = res["count_check"]
    g.append(("Spearman(|phi|, k) >= %.2f on scenes_val" % GOALS["spearman"], "%.3f" % cc["spearman"],
              cc["spearman"] >= GOALS["spearman"]))
    cm = cc.get("count_map") or {}
    if cm:
        g.append(("least-squares map: exact k >= %d %%" % (100 * GOALS["exact"]), "%.1f %%" % (100 * cm["exact"]),
                  cm["exact"] >= GOALS["exact"]))
        g.append(("least-squares map: k +- 1 >= %d %%" % (100 * GOALS["within1"]), "%.1f %%" % (100 * cm["within1"]),
                  cm["within1"] >= GOALS["within1"]))
    te = res["train_end"]
    if te.get("count_term") is not None:
        g.append(("counting term well below M = 10 at the end (train; < M/4)", "%.3g" % te["count_term"],
                  te["count_term"] < 2.5))
        g.append(("hinge active on a minority of samples (train; < 50 %)", "%.0f %%" % (100 * te["hinge_active"]),
                  te["hinge_active"] < 0.5))
    tp = res.get("test_photos")
    if tp and tp.get("loss") is not None:
        g.append(("TEST loss on held-out photos well below M = 10 (< M/2)", "%.3g" % tp["loss"], tp["loss"] < 5.0))
    gain = res.get("probe", {}).get("gain", {})
    for layer in ("conv3", "conv4", "conv5"):
        if layer in gain:
            g.append(("probe %s: counting - random >= %.0f top-1 points" % (layer, GOALS["probe_margin"]),
                      "%+.1f" % gain[layer], gain[layer] >= GOALS["probe_margin"]))
    return g


def _fmt(v, f="%#.3g"):
    """Three significant digits, trailing zeros kept (6.00, not 6: a mean, not a count)."""
    return "-" if v is None else f % v


def train_partner(solver_path):
    """The contrastive partner of a solver's TRAIN data layer: "batch" (the paper's) or "same_source"."""
    from caffe.proto import caffe_pb2
    from google.protobuf import text_format
    net = caffe_pb2.NetParameter()
    with open(os.path.join(REPO, solver(solver_path).net)) as f:
        text_format.Merge(f.read(), net)
    (layer,) = nets.train_data_layers(net)
    return json.loads(layer.python_param.param_str or "{}").get("partner", "batch")


def main_lines(res):
    """The main run's sections of the report."""
    L = ["\n## The main run\n"]
    partner = res["main"].get("partner")
    if partner is None and os.path.isfile(os.path.join(REPO, res["main"]["solver"])):
        partner = train_partner(res["main"]["solver"])
    L.append("Model: `%s` (iteration %d, solver `%s`%s)." % (
        res["main"]["weights"], res["main"]["iteration"], res["main"]["solver"],
        ", contrastive partner `%s`" % partner if partner else ""))
    cc = res["count_check"]
    L.append("\n## Counting on the Fashion scenes (%d val scenes)\n" % cc["n"])
    L.append("Spearman(|phi|, k) = %.4f, Pearson = %s." % (cc["spearman"], _fmt(cc["pearson"], "%.4f")))
    cm = cc.get("count_map")
    if cm:
        L.append("Least-squares map phi -> k fitted on %d train scenes (ridge %g): exact %.1f %%, +-1 %.1f %%, "
                 "mean |error| %.3f on val (on the fitted scenes: exact %.1f %%, +-1 %.1f %%)."
                 % (cm["n_fit"], cm["ridge"], 100 * cm["exact"], 100 * cm["within1"], cm["mae"],
                    100 * cm["train"]["exact"], 100 * cm["train"]["within1"]))
    cr = res.get("count_check_random_init")
    if cr:
        crm = cr.get("count_map") or {}
        L.append("Control, the untrained net (same init seed): Spearman %.4f; least-squares map exact %.1f %%, "
                 "+-1 %.1f %% (guessing the middle count: 5.9 %% / 17.6 %%)."
                 % (cr["spearman"], 100 * crm.get("exact", float("nan")), 100 * crm.get("within1", float("nan"))))
    L.append("\n| k | scenes | mean norm | std |\n|---|---|---|---|")
    for p in cc["per_count"]:
        L.append("| %d | %d | %.4g | %.3g |" % (p["k"], p["count"], p["mean"], p["std"]))
    L.append("\n![norm vs k](count_check/count_check.png)\n")
    if res.get("trajectory"):
        L.append("Norm trajectory over the snapshots (first scenes of scenes_val):\n")
        L.append("| iteration | Spearman | mean norm | mean norm k=0 | mean norm k=max |\n|---|---|---|---|---|")
        for t in res["trajectory"]:
            L.append("| %d | %.3f | %.4g | %.4g | %.4g |" % (t["iteration"], t["spearman"], t["mean_norm"],
                                                            t["norm_k0"], t["norm_kmax"]))
    te = res["train_end"]
    L.append("\n## Loss terms at the end of training (mean of the last displayed train rows)\n")
    L.append("loss %s = counting term %s + contrast term %s; hinge active on %s of the samples; mean |phi(Dx)| %s."
             % (_fmt(te["loss"]), _fmt(te["count_term"]), _fmt(te["contrast_term"]),
                _fmt(None if te["hinge_active"] is None else 100 * te["hinge_active"], "%.0f %%"), _fmt(te["norm_dx"])))
    tp = res.get("test_photos")
    if tp:
        L.append("\n## Real photos: TEST on the %s held-out photos (iteration %d)\n" % ("8", tp["iteration"]))
        first = res.get("test_photos_first") or {}
        L.append("TEST loss %s (first test pass, iteration %s: %s) = counting term %s + contrast term %s; hinge "
                 "active on %s; mean |phi(Dx)| %s."
                 % (_fmt(tp["loss"]), first.get("iteration"), _fmt(first.get("loss")), _fmt(tp["count_term"]),
                    _fmt(tp["contrast_term"]), _fmt(None if tp["hinge_active"] is None else 100 * tp["hinge_active"],
                                                    "%.0f %%"), _fmt(tp["norm_dx"])))
    mv = res["mean_vector"]
    L.append("\nMean counting vector over the %d held-out photos (Fig. 3): %d of %d entries non-zero, %d above %g, "
             "%d above %g x the largest mean (%.3g); mean |phi| %.3g.\n"
             % (mv["n_images"], mv["n_nonzero"], mv["n_dims"], mv["n_above_threshold"], mv["threshold"],
                mv["n_above_rel"], mv["rel_threshold"], mv["max_mean"], mv["mean_norm"]))
    L.append("![mean vector](mean_vector/mean_vector.png)\n")
    fs = res.get("fc8_scenes")
    if fs:
        L.append("On %d val scenes, %d of the %d counting-vector entries are ever non-zero (the rest are dead "
                 "ReLUs there); %d have a mean above 0.01.\n" % (fs["n_images"], fs["n_ever_active"], fs["n_dims"],
                                                                 fs["n_above_threshold"]))
    pr = res.get("probe")
    if pr:
        L.append("## Transfer: linear probe on frozen features (%s, %d iterations, seeds %s; val %s)\n"
                 % (pr["train_lmdb"], pr["iters"], ", ".join(map(str, pr["seeds"])), pr["val_lmdb"]))
        L.append("| model | " + " | ".join(PROBE_LAYERS) + " |\n|---|" + "---|" * len(PROBE_LAYERS))
        for model in ("counting", "random"):
            if model in pr:
                L.append("| %s | " % model + " | ".join("%.1f +- %.1f" % (pr[model][l]["mean"], pr[model][l]["spread"] / 2)
                                                        for l in PROBE_LAYERS) + " |")
        if "gain" in pr:
            L.append("| counting - random | " + " | ".join("%+.1f" % pr["gain"][l] for l in PROBE_LAYERS) + " |")
        L.append("\n(top-1 %; mean +- half the range over the seeds)\n")
    t5 = res.get("table5")
    if t5:
        L.append("## Table 5 at this scale (iteration %d, %d scenes)\n" % (t5["iteration"], t5["n_images"]))
        L.append("```\n%s\n```\n" % t5["table"])
        if t5.get("missing"):
            L.append("Only the mixed row: %s.\n" % t5["missing"])
        L.append("![table 5](table5/table5.png)\n")
    L.append("## Training curves\n\n![curves](log/curves.png)\n")
    for w in res.get("log_warnings") or []:
        L.append("**%s**\n" % w)
    return L


def write_report(res, out, wall=None, commands=None):
    """OUT/report.md from the results dict (the main run's sections and the photo run's, each when present)."""
    L = ["# Reproduction study: learning to count at a small scale\n"]
    if wall:
        L.append("Wall time: %s." % wall)
    L.append("\n## Goals\n\n| goal | measured | met |\n|---|---|---|")
    for goal, measured, met in goals(res):
        L.append("| %s | %s | %s |" % (goal, measured, "yes" if met else "**no**"))
    if "main" in res:
        L += main_lines(res)
    if "photos" in res:
        L += photo_lines(res["photos"])
    if commands:
        L.append("## Commands\n\n```\n%s\n```\n" % commands.strip())
    os.makedirs(os.path.join(REPO, out), exist_ok=True)
    path = os.path.join(REPO, out, "report.md")
    with open(path, "w") as f:
        f.write("\n".join(L) + "\n")
    return path


def _probe_table(dp):
    L = ["| labels per class | " + " | ".join(PROBE_LAYERS) + " |", "|---|" + "---|" * len(PROBE_LAYERS)]
    for n in dp["per_class"]:
        L.append("| %d | " % n + " | ".join("%+.2f [%+.2f, %+.2f]" % tuple(dp["gains"]["%d/%s" % (n, l)][k]
                                                                          for k in ("mean", "lo", "hi"))
                                            for l in PROBE_LAYERS) + " |")
    n = max(dp["per_class"])
    L.append("| top-1 at %d: counting / random | " % n + " | ".join(
        "%.1f / %.1f" % (dp["gains"]["%d/%s" % (n, l)]["counting"], dp["gains"]["%d/%s" % (n, l)]["random"])
        for l in PROBE_LAYERS) + " |")
    return L


def photo_lines(ph):
    """The photo run's sections of the report (issue 27)."""
    L = ["\n## The photo run: scenes + views of the packaged photos\n",
         "Model: `%s` (iteration %d, solver `%s`, partner `%s`), trained on `%s`, tested on `%s` (views of "
         "held-out photos: whole groups, never crops of a training photo)."
         % (ph["weights"], ph["iteration"], ph["solver"], ph["partner"], ph["train_lmdb"], ph["test_lmdb"])]
    tv = ph.get("test_views") or []
    if tv:
        L.append("\nTEST passes on the held-out views (caffe's TEST phase, every view once):\n")
        L.append("| iteration | loss | counting term | contrast term | hinge active | mean abs phi(Dx) |\n|---|---|---|---|---|---|")
        for t in tv:
            L.append("| %d | %s | %s | %s | %s | %s |" % (t["iteration"], _fmt(t["loss"]), _fmt(t["count_term"]),
                                                        _fmt(t["contrast_term"]),
                                                        _fmt(None if t["hinge_active"] is None else 100 * t["hinge_active"],
                                                             "%.0f %%"), _fmt(t["norm_dx"])))
    te = ph.get("train_end") or {}
    if te.get("loss") is not None:
        L.append("\nTrain (mean of the last displayed rows): loss %s, counting term %s, hinge active %s, |phi(Dx)| %s."
                 % (_fmt(te["loss"]), _fmt(te["count_term"]), _fmt(100 * te["hinge_active"], "%.0f %%"),
                    _fmt(te["norm_dx"])))
    gap = ph.get("gap") or {}
    if any(gap.values()):
        names = (("train_views", "training views (first 1,000)"), ("heldout_views", "held-out views"),
                 ("val_scenes", "val scenes"))
        its = sorted({r["iteration"] for rows in gap.values() for r in rows})
        at = {(n, r["iteration"]): r for n, _ in names for r in gap.get(n, [])}
        L.append("\nSeen against unseen: `caffe test` of every snapshot (the TEST phase's views and seed) with the "
                 "TEST data reading each source. Counting term / hinge active / mean abs phi(Dx):\n")
        L.append("| iteration | " + " | ".join(t for _, t in names) + " |\n|---|" + "---|" * len(names))
        for it in its:
            cells = []
            for n, _ in names:
                r = at.get((n, it))
                cells.append("-" if r is None else "%s / %.0f %% / %s" % (_fmt(r["count_term"]), 100 * r["hinge_active"],
                                                                         _fmt(r["norm_dx"])))
            L.append("| %d | %s |" % (it, " | ".join(cells)))
    mv = ph["mean_vector"]
    L.append("\nMean counting vector over %d held-out views (Fig. 3): %d of %d entries non-zero, %d above %g; "
             "largest mean %.3g, mean |phi| %.3g." % (mv["n_images"], mv["n_nonzero"], mv["n_dims"],
                                                     mv["n_above_threshold"], mv["threshold"], mv["max_mean"],
                                                     mv["mean_norm"]))
    L.append("\n| scenes (500 val, map fitted on the train scenes) | Spearman(norm, k) | exact k | k +- 1 |\n|---|---|---|---|")
    for label, key in (("mixed size 24-48 px, tinted", "count_check"),
                       ("fixed size %d px, gray" % (ph.get("count_check_fixed") or {}).get("item", 0), "count_check_fixed")):
        c = ph.get(key)
        if c:
            cm = c["count_map"]
            L.append("| %s | %.3f | %.1f %% | %.1f %% |" % (label, c["spearman"], 100 * cm["exact"], 100 * cm["within1"]))
    for key, title in (("domain_probe", "In-domain probe (Fashion items as scene items, seen as D(x))"),
                       ("elpv_probe", "Real-photo probe (elpv solar cells)")):
        dp = ph.get(key)
        if dp:
            L.append("\n%s: counting - mean of %d random inits, top-1 points, mean [paired 95 %% interval] over %d "
                     "label-subset seeds; %d val items, training pool %d.\n"
                     % (title, len(dp["models"]) - 1, dp["seeds"], dp["val_items"], dp["train_pool"]))
            L += _probe_table(dp)
        elif key in ph:
            L.append("\n%s: skipped (its optional package is not installed)." % title)
    L.append("\n![training curves](photos/log/curves.png)\n")
    return L


# ----------------------------------------------------------------------------- the demo's last words
def demo_summary(count_json, log_json, figures, trained_on="the Fashion-MNIST scenes",
                 tested_on="100 held-out scenes"):
    """The closing lines of `make demo`, in plain words, from count-check's and log's JSON."""
    with open(count_json) as f:
        cc = json.load(f)
    with open(log_json) as f:
        lg = json.load(f)
    tests = [r for r in lg["test"] if "test_loss" in r]
    per_k = cc["per_count"]
    lines = ["", "=" * 78, "What the demo's network learned"]
    lines.append("  Training: %d iterations on %s, no labels used."
                 % (lg["train"][-1]["iteration"] if lg["train"] else 0, trained_on))
    if tests:
        lines.append("  TEST loss on %s: %.3g at iteration %d -> %.3g at iteration %d "
                     "(an all-zero counting vector scores exactly M = 10)."
                     % (tested_on, tests[0]["test_loss"], tests[0]["iteration"], tests[-1]["test_loss"],
                        tests[-1]["iteration"]))
    lines.append("  Count check on %d unseen scenes of 0..16 items: Spearman(|phi|, k) = %.3f "
                 "(1 = the norm of the counting vector orders the scenes exactly by their number of items)."
                 % (cc["n_images"], cc["spearman"]))
    lines.append("  Mean norm |phi| for k = %d items: %.3g; for k = %d items: %.3g."
                 % (per_k[0]["k"], per_k[0]["mean"], per_k[-1]["k"], per_k[-1]["mean"]))
    cm = cc.get("count_map")
    if cm:
        lines.append("  A linear read-out of phi fitted on training scenes gives the exact count for %.0f %% of the "
                     "unseen scenes and the count +-1 for %.0f %% (guessing: about 6 %% and 17 %%)."
                     % (100 * cm["exact"], 100 * cm["within1"]))
    if cc["spearman"] >= 0.8:
        verdict = ("The network learned to count: without any labels, its counting vector grows with the number "
                   "of objects in the scene.")
    elif cm and cm["within1"] >= 0.5:
        verdict = ("The network learned something about counting without labels: its counting vector carries the "
                   "number of items (the linear read-out), but after this short run its norm does not yet grow "
                   "with the count (Spearman < 0.8). README, 'Does it reproduce?', has the longer runs.")
    else:
        verdict = ("After this short run the counting signal is weak (Spearman < 0.8). README, 'Does it "
                   "reproduce?', has the longer runs.")
    lines += ["  " + line for line in textwrap.wrap(verdict, 76)]
    for label, path in figures:
        lines.append("  %-28s %s" % (label + ":", path))
    lines.append("=" * 78)
    return "\n".join(lines)
