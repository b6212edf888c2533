"""Mutation check of the test suite (not part of `make test`; run `make mutations`).

Each mutation below is a small, plausible bug: a text replacement in one source file. The
script copies the tree (the files git tracks or would track) into a temporary folder, then for
each mutation in turn applies it there, runs the tests named for it (pytest -x) and restores the
file. A mutation the tests do not notice "survives": the table lists it and the exit code is 1
(unless its note marks it equivalent: a change no output can show); an error run also exits 1.

    python tests/mutations.py              # all mutations, after a baseline run of their tests
    python tests/mutations.py --list       # the list
    python tests/mutations.py -k shuffle   # those whose name contains "shuffle" (-k a -k b: either)

The copy imports its own ltc/ and python_layers/ (PYTHONPATH puts them first, also for the
`caffe` binary's embedded Python); the .venv is shared with this checkout.
"""
import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

Mutation = collections.namedtuple("Mutation", "name path old new tests count note")


def M(name, path, old, new, tests, count=1, note=""):
    return Mutation(name, path, old, new, tuple(tests), count, note)


T_LISTS = "tests/test_lmdb_lists.py"
T_TRANSFORMS = "tests/test_count_transforms.py"
T_LOSS = "tests/test_counting_loss.py"
T_PARAMS = "tests/test_layer_params.py"
T_TRAIN = "tests/test_train_cli.py"
T_PORT = "tests/test_port_weights.py"
T_TRANSFER = "tests/test_transfer.py"
T_BENCH = "tests/test_bench.py"
T_DATA = "tests/test_counting_data.py"
T_KNOBS = "tests/test_knobs.py"
VARIANT = T_TRAIN + "::test_committed_net_runs_forward_backward_in_caffe"
SAME_DB = "tests/test_make_lmdb.py::test_list_and_folder_give_same_database"
UV = "tests/test_user_visible.py"
GEN = "tests/test_generator_options.py"
AO = "tests/test_analysis_options.py"
CLI = "tests/test_cli_options.py"
DO = "tests/test_data_options.py"

MUTATIONS = [
    # --- the twelve bugs of the mutation read (issue 17)
    M("shuffle does nothing", "ltc/lmdb_build/build.py",
      "    if shuffle:\n        order = np.random", "    if False:\n        order = np.random", [SAME_DB, T_LISTS]),
    M("shuffle ignores --seed", "ltc/lmdb_build/build.py",
      "np.random.RandomState(seed).permutation(len(entries))", "np.random.RandomState(0).permutation(len(entries))",
      [SAME_DB, T_LISTS]),
    M("normalisation: sample std (ddof 1)", "ltc/transforms.py",
      "return mean, np.sqrt(max(s2 / n - mean * mean, 0.0))",
      "return mean, np.sqrt(max(s2 / n - mean * mean, 0.0) * n / (n - 1))", [T_TRANSFORMS, T_PARAMS]),
    M("reference normalisation: sample std (ddof 1)", "ltc/transforms.py",
      "return ((v - v.mean()) / (v.std() + eps))", "return ((v - v.mean()) / (v.std(ddof=1) + eps))", [T_TRANSFORMS]),
    M("normalisation: eps 1e-3 (normalize_into default)", "ltc/transforms.py",
      "def normalize_into(views, gray, out, eps=EPS):", "def normalize_into(views, gray, out, eps=1e-3):",
      [T_TRANSFORMS]),
    M("normalisation: eps 1e-3 (data layer default)", "ltc/knobs.py",
      'Knob("eps", 1e-5, float,', 'Knob("eps", 1e-3, float,', [T_PARAMS + "::test_data_layer_default_normalisation_is_the_formula"]),
    M("list file: label split at the first space", "ltc/lmdb_build/sources.py",
      'head, tail = line.rsplit(" ", 1)', 'head, tail = line.split(" ", 1)', [T_LISTS]),
    M("fold-std: root of the mean variance", "ltc/surgery.py",
      "return float(np.mean(stds)), len(stds)", "return float(np.sqrt(np.mean(np.square(stds)))), len(stds)",
      [T_PORT + "::test_fold_std_measures_the_counting_inputs"]),
    M("loss backward ignores the hinge's active mask", "ltc/loss.py",
      "g_dy = -c * active[:, None] * r_neg", "g_dy = -c * r_neg", [T_LOSS + "::test_backward_matches_finite_differences_float64"]),
    M("FCN-AlexNet conv1-5 frozen (lr 0)", "ltc/transfer_nets.py",
      "x = caffenet_trunk(n, n.data, conv1_pad=100)", "x = caffenet_trunk(n, n.data, conv1_pad=100, frozen=True)",
      [T_TRANSFER + "::test_fcn_alexnet_structure_and_one_step"]),
    M("bench lmdb_write: vs_convert inverted", "bench/lmdb_write.py",
      'r["vs_convert"] = r["images_s"] / ref[0]["images_s"]', 'r["vs_convert"] = ref[0]["images_s"] / r["images_s"]',
      [T_BENCH]),
    M("bench data_layer: scaling not per worker", "bench/data_layer.py",
      'r["scaling"] = r["samples_s"] / (r["workers"] * one[0]["samples_s"])',
      'r["scaling"] = r["samples_s"] / one[0]["samples_s"]', [T_BENCH]),
    M("bench train_step: vs_plain inverted", "bench/train_step.py",
      'r["vs_plain_pct"] = 100.0 * (r["step_s"] / plain[0]["step_s"] - 1.0)',
      'r["vs_plain_pct"] = 100.0 * (plain[0]["step_s"] / r["step_s"] - 1.0)', [T_BENCH]),
    M("bench profile: wgrad copy prunes the backward below the top conv", "bench/train_step.py",
      "    for blob in kept:\n", "    for blob in kept[:0]:\n", [T_BENCH + "::test_profile_wgrad_net_keeps_every_conv_weight_gradient"]),
    M("gray variant not gray (committed net)", "prototxt/variants/gray/train_val.prototxt",
      '\\"gray_prob\\": 1.0', '\\"gray_prob\\": 0.67', [VARIANT], count=2),
    M("data layer ignores gray_prob", "python_layers/counting_data.py",
      'gray_prob=p["gray_prob"]', "gray_prob=knobs.GRAY_PROB", [VARIANT]),
    M("data layer ignores a fixed interpolation", "python_layers/counting_data.py",
      'interpolation=p["interpolation"]', "interpolation=knobs.INTERPOLATION", [VARIANT]),
    M("cubic variant runs per_batch (committed net)", "prototxt/variants/interp_cubic/train_val.prototxt",
      '\\"interpolation\\": \\"cubic\\"', '\\"interpolation\\": \\"per_batch\\"', [VARIANT], count=2),
    M("'cubic' mapped to OpenCV's linear", "ltc/transforms.py",
      '"cubic": cv2.INTER_CUBIC', '"cubic": cv2.INTER_LINEAR', [T_TRANSFORMS, VARIANT]),
    M("'area' mapped to OpenCV's linear", "ltc/transforms.py",
      '"area": cv2.INTER_AREA', '"area": cv2.INTER_LINEAR', [T_TRANSFORMS, VARIANT],
      note="equivalent: a 2:1 downscale (228 -> 114) with INTER_LINEAR averages each 2x2 block, as INTER_AREA does"),
    M("dim20 variant has 1000 outputs (committed net)", "prototxt/variants/dim20/train_val.prototxt",
      "num_output: 20\n", "num_output: 1000\n", [VARIANT], count=6),
    M("numpy loss tests skipped without caffe", "tests/test_counting_loss.py",
      "try:\n    import caffe\nexcept ImportError:\n    caffe = None\n",
      'caffe = pytest.importorskip("caffe")\n', [T_LOSS + "::test_numpy_tests_run_without_caffe"]),
    # --- the loss hinge, tile/crop alignment, gray on y, the derangement, conv bias in porting
    M("loss hinge on |b - s|, not its square", "ltc/loss.py",
      "hinge = M - d_neg", "hinge = M - np.sqrt(d_neg)", [T_LOSS]),
    M("loss hinge never clipped", "ltc/loss.py", "active = hinge > 0", "active = hinge > -np.inf", [T_LOSS]),
    M("tiles: TR and BL swapped", "ltc/transforms.py",
      "crop[:, :s, s:2 * s], crop[:, s:2 * s, :s]", "crop[:, s:2 * s, :s], crop[:, :s, s:2 * s]", [T_TRANSFORMS]),
    M("crop: y and x offsets swapped", "ltc/transforms.py",
      "return img[:, y0:y0 + crop, x0:x0 + crop]", "return img[:, x0:x0 + crop, y0:y0 + crop]", [T_TRANSFORMS]),
    M("y's crop drawn with x's offset", "ltc/transforms.py",
      "y = crop_chw(img_y, *crop_offset(off_y,", "y = crop_chw(img_y, *crop_offset(off_x,", [T_TRANSFORMS]),
    M("gray flag not applied to y", "ltc/transforms.py",
      "        dst = out[k]\n        if gray:", "        dst = out[k]\n        if gray and k < 5:", [T_TRANSFORMS]),
    M("derangement accepts fixed points", "ltc/transforms.py",
      "if not np.any(ids[p] == ids):", "if True:", [T_TRANSFORMS]),
    M("porting zeroes the conv biases", "ltc/surgery.py",
      "        for dst, b in zip(blobs, src.blobs):\n            dst.CopyFrom(b)\n",
      "        for dst, b in zip(blobs, src.blobs):\n            dst.CopyFrom(b)\n"
      "            if dst is blobs[1]:\n                dst.ClearField(\"data\")\n"
      "                dst.data.extend([0.0] * len(b.data))\n", [T_PORT]),
    # --- the added tests' subjects
    M("TEST passes do not repeat", "ltc/transforms.py",
      "b = batch_index % (test_batches or -(-n_db // batch_size))", "b = batch_index",
      [T_TRAIN + "::test_test_passes_under_caffe_train_are_identical"]),
    M("solver test_iter differs from test_batches (committed)", "prototxt/solver.prototxt",
      "test_iter: 20\n", "test_iter: 10\n",
      [T_TRAIN + "::test_committed_solvers_test_iter_equals_the_test_data_layers_test_batches"]),
    M("data layer: test_batches range check dropped", "ltc/knobs.py",
      '"0 = one pass over the LMDB", lo=0),', '"0 = one pass over the LMDB"),', [T_PARAMS]),
    M("param_str: a refused value's message does not name the key", "ltc/params.py",
      """raise ParamError("%s: param_str key '%s' %s" % (layer, e.key, e))""",
      """raise ParamError("%s: param_str %s" % (layer, e))""", [T_PARAMS]),
    # --- issue 29: one declaration of the knobs (ltc/knobs.py), checked at generation and in setup
    M("knobs: range checks off", "ltc/knobs.py",
      "            if bad:\n                raise KnobError(", "            if False:\n                raise KnobError(",
      [T_KNOBS]),
    M("knobs: batch_size loses its lower bound", "ltc/knobs.py",
      '"samples per batch (256: as the Jigsaw sibling)", lo=2,', '"samples per batch (256: as the Jigsaw sibling)",',
      [T_KNOBS]),
    M("make_prototxt: configuration not checked at generation", "ltc/nets.py",
      "cfg = knobs.check_net(dict(DEFAULTS, **cfg))", "cfg = dict(DEFAULTS, **cfg)", [T_KNOBS]),
    M("list file: labels beyond int32 accepted", "ltc/lmdb_build/sources.py",
      "if not INT32_MIN <= label <= INT32_MAX:", "if False:", [T_LISTS]),
    # --- resume (ltc/snapshots.py, tests/test_resume.py)
    M("resume: TRAIN restarts at iteration, ignoring iter_size", "ltc/snapshots.py",
      "return iteration * max(1, solver_param.iter_size)", "return iteration",
      ["tests/test_resume.py::test_data_start_positions",
       "tests/test_resume.py::test_caffe_binary_resume_continues_the_data_stream_and_the_weights"]),
    M("resume: data layer starts at batch 0", "python_layers/counting_data.py",
      'start=start, shard=p["shard"]', 'start=0, shard=p["shard"]',
      ["tests/test_resume.py::test_caffe_binary_resume_continues_the_data_stream_and_the_weights"]),
    # --- issue 32: bugs users would see, which the data of the earlier tests could not show
    M("crop: x offset from the height's slack", "ltc/transforms.py",
      "int(u[1] * (width - crop + 1))", "int(u[1] * (height - crop + 1))",
      [UV + "::test_data_pipeline_crops_non_square_images_as_numpy_does"]),
    M("crop: image width read as its height", "ltc/transforms.py",
      "crop_offset(off_x, img_x.shape[1], img_x.shape[2], crop)", "crop_offset(off_x, img_x.shape[1], img_x.shape[1], crop)",
      [UV + "::test_data_pipeline_crops_non_square_images_as_numpy_does"]),
    M("make_lmdb shorter-crop: x offset from the height", "ltc/lmdb_build/images.py",
      "y0, x0 = (nh - size) // 2, (nw - size) // 2", "y0, x0 = (nh - size) // 2, (nh - size) // 2",
      [DO + "::test_coco_resize_encoded_and_seed"]),
    M("table 5: crop offsets with the axes swapped", "ltc/analysis/table5.py",
      "crop_offset(rng.random(2), chw.shape[1], chw.shape[2], crop)", "crop_offset(rng.random(2), chw.shape[2], chw.shape[1], crop)",
      [UV + "::test_table5_and_center_views_crop_non_square_images"]),
    M("fold-std: --seed does not reach the measurement", "ltc/surgery.py",
      "args.fold_std_gray_prob, args.seed, args.fold_std_interpolation)",
      "args.fold_std_gray_prob, SEED, args.fold_std_interpolation)",
      [UV + "::test_port_weights_fold_std_follows_the_seed_option"]),
    M("fold-std: --fold-std-interpolation ignored", "ltc/surgery.py",
      "args.fold_std_gray_prob, args.seed, args.fold_std_interpolation)",
      "args.fold_std_gray_prob, args.seed)", [UV + "::test_fold_std_options_all_reach_the_measurement"]),
    M("warm-up: slope 1 / warmup instead of 10 / warmup", "ltc/nets.py",
      's.gamma = 10.0 / cfg["warmup"]', 's.gamma = 1.0 / cfg["warmup"]',
      [UV + "::test_warmup_solver_learning_rate_in_real_caffe"]),
    M("warm-up: centred at warmup instead of warmup / 2", "ltc/nets.py",
      's.stepsize = cfg["warmup"] // 2', 's.stepsize = cfg["warmup"]',
      [UV + "::test_warmup_solver_learning_rate_in_real_caffe"]),
    M("mean vector: std taken along the image axis", "ltc/analysis/metrics.py",
      "std=F.std(0)", "std=F.std(1)", [UV + "::test_mean_vector_stats_are_per_dimension_values",
                                        UV + "::test_mean_vector_command_writes_numpy_statistics"]),
    M("count-check: read-out fitted on the evaluated set", "ltc/analysis/subcommands.py",
      "fit_count_map(F_fit, fit_labels, alpha=ridge)", "fit_count_map(F, k, alpha=ridge)",
      [UV + "::test_count_check_fits_the_read_out_on_the_fit_set_only"]),
    M("count-check: --ridge ignored", "ltc/analysis/subcommands.py",
      "fit_count_map(F_fit, fit_labels, alpha=ridge)", "fit_count_map(F_fit, fit_labels)",
      [UV + "::test_count_check_fits_the_read_out_on_the_fit_set_only"]),
    M("counting loss ignores loss_weight", "python_layers/counting_loss.py",
      "counting_loss_backward(self.cache, float(top[0].diff))", "counting_loss_backward(self.cache, 1.0)",
      [UV + "::test_loss_layers_scale_their_gradients_by_loss_weight"]),
    M("SmoothL1 layer ignores loss_weight", "python_layers/smooth_l1_loss_layer.py",
      "(self.grad * float(top[0].diff))", "(self.grad * 1.0)",
      [UV + "::test_loss_layers_scale_their_gradients_by_loss_weight"]),
    # --- issue 32's sweep: options no test used to turn on (tests/option_coverage.py), each ignored
    M("make_prototxt: --margin ignored", "ltc/nets.py",
      'json.dumps({"M": margin})', 'json.dumps({"M": 10.0})', [GEN]),
    M("analyze: --color-mode ignored", "ltc/analysis/subcommands.py",
      'color_mode=o["color_mode"], chunk=o["batch"], desc=desc)', 'color_mode="color", chunk=o["batch"], desc=desc)',
      [AO + "::test_shared_image_options_reach_every_image_subcommand"]),
    M("analyze mean-vector: --threshold ignored", "ltc/analysis/subcommands.py",
      "metrics.mean_vector_stats(F, threshold)", "metrics.mean_vector_stats(F)",
      [AO + "::test_shared_image_options_reach_every_image_subcommand"]),
    M("analyze crop-scale: --max-area ignored", "ltc/analysis/subcommands.py",
      "img.shape[1], min_area, max_area)", "img.shape[1], min_area)",
      [AO + "::test_crop_scale_area_range_bins_and_seed"]),
    M("train_multigpu: --lr-scaling ignored", "tools/train_multigpu.py",
      "a.batch_mode, a.lr_scaling)", "a.batch_mode)",
      [CLI + "::test_train_multigpu_split_and_linear_lr_reach_the_rank_files"]),
    M("port_weights: --rescale-layers ignored", "tools/port_weights.py",
      '[l for l in args.rescale_layers.split(",") if l]', '["fc6", "fc7", "score_fr"]',
      [CLI + "::test_port_weights_rescale_layers_touches_only_those_layers"]),
    M("make_lmdb: --jpeg-quality ignored", "tools/make_lmdb.py",
      "jpeg_quality=args.jpeg_quality", "jpeg_quality=95", [CLI + "::test_make_lmdb_jpeg_quality_sets_the_stored_jpeg"]),
    M("lmdb_info: --pick ignored", "tools/lmdb_info.py",
      "args.tile, args.pick)", "args.tile)", [CLI + "::test_lmdb_info_pick_first_takes_the_first_entries"]),
    M("fashion_scenes: --gap ignored", "ltc/fashion.py",
      "o.margin, o.gap, o.gray, o.tries)", "o.margin, 2, o.gray, o.tries)",
      [DO + "::test_fashion_scene_options_shape_the_scenes"]),
    M("fashion_scenes: --max-item ignored", "ltc/fashion.py",
      "o.canvas, o.min_item, o.max_item,", "o.canvas, o.min_item, 48,",
      [DO + "::test_fashion_scene_options_shape_the_scenes"]),
    M("VOC seg layer ignores shuffle", "python_layers/voc_layers.py",
      'p["mirror"], p["shuffle"], p["seed"]', 'p["mirror"], True, p["seed"]',
      [DO + "::test_seg_layer_mirror_and_shuffle_keys"]),
    M("VOC det layer ignores fg_fraction", "python_layers/voc_layers.py",
      'p["fg_fraction"], p["mirror"]', '0.25, p["mirror"]', [DO + "::test_det_layer_fg_fraction_key"]),
    M("export: --eps ignored", "tools/export.py",
      "size=args.input_size, eps=args.eps)", "size=args.input_size, eps=ex.DEFAULT_EPS)",
      [CLI + "::test_export_cli_passes_its_options_on"]),
    M("linear_probe: --num-classes ignored", "ltc/probe.py",
      "num_classes = num_classes or int(", "num_classes = int(",
      [CLI + "::test_linear_probe_num_classes_stepsize_and_seed"]),
]


def copy_tree(dst):
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True,
                           capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        src = os.path.join(REPO, rel)
        if os.path.isfile(src):
            os.makedirs(os.path.dirname(os.path.join(dst, rel)) or dst, exist_ok=True)
            shutil.copy2(src, os.path.join(dst, rel), follow_symlinks=False)
    os.symlink(os.path.join(REPO, ".venv"), os.path.join(dst, ".venv"))


def run_tests(tree, tests, timeout):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([tree, os.path.join(tree, "python_layers")]
                                                       + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])),
               PYTHONDONTWRITEBYTECODE="1")
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-rf", "-p", "no:cacheprovider"] + list(tests)
    t0 = time.time()
    try:
        res = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, timeout=timeout)
        out, rc = res.stdout + res.stderr, res.returncode
    except subprocess.TimeoutExpired as e:
        out, rc = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or ""), -1
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", out, re.M)
    return rc, failed, time.time() - t0, out


def apply(tree, m):
    path = os.path.join(tree, m.path)
    with open(path) as f:
        text = f.read()
    n = text.count(m.old)
    if n != m.count:
        raise SystemExit("mutation %r: expected %d occurrence(s) of its text in %s, found %d: update the list"
                         % (m.name, m.count, m.path, n))
    with open(path, "w") as f:
        f.write(text.replace(m.old, m.new))
    return text


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("-k", dest="select", action="append", default=[],
                    help="only mutations whose name contains this (repeat for several; default all)")
    ap.add_argument("--list", action="store_true", help="print the mutations and exit")
    ap.add_argument("--no-baseline", action="store_true", help="skip the unmutated run of the selected tests")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per pytest run")
    ap.add_argument("--log", default="", help="append each run's pytest output to this file")
    a = ap.parse_args(argv)
    todo = [m for m in MUTATIONS if not a.select or any(k.lower() in m.name.lower() for k in a.select)]
    if a.list:
        for m in todo:
            print("%-52s %-40s %s" % (m.name, m.path, " ".join(m.tests)))
        return 0
    tree = tempfile.mkdtemp(prefix="ltc-mutations-")
    try:
        copy_tree(tree)
        absent = [m for m in todo if not os.path.exists(os.path.join(tree, m.path))]
        for m in absent:
            print("%-52s n/a: %s is not in this tree" % (m.name, m.path))
        todo = [m for m in todo if m not in absent]
        for m in todo:  # every mutation's text is where the list says, before anything runs
            with open(os.path.join(tree, m.path)) as f:
                if f.read().count(m.old) != m.count:
                    raise SystemExit("mutation %r does not match %s: update the list" % (m.name, m.path))
        if not a.no_baseline:
            tests = sorted({t for m in todo for t in m.tests})
            rc, failed, secs, out = run_tests(tree, tests, a.timeout * 3)
            print("baseline (unmutated): %s in %.0f s" % ("pass" if rc == 0 else "FAIL %s" % failed, secs), flush=True)
            if rc != 0:
                print(out[-5000:])
                return 2
        rows = []
        for m in todo:
            original = apply(tree, m)
            try:
                rc, failed, secs, out = run_tests(tree, m.tests, a.timeout)
            finally:
                with open(os.path.join(tree, m.path), "w") as f:
                    f.write(original)
            if a.log:
                with open(a.log, "a") as f:
                    f.write("\n===== %s (rc %d)\n%s" % (m.name, rc, out))
            if rc == 0:
                result, by = "SURVIVED", m.note or "-"
            elif rc == 1 and failed:
                result, by = "killed", failed[0]
            else:
                result, by = "error", "pytest exit %d %s" % (rc, (failed or [out.strip().splitlines()[-1:]])[0])
            rows.append((m.name, result, by, secs))
            print("%-52s %-8s %5.0f s  %s" % (m.name, result, secs, by), flush=True)
    finally:
        shutil.rmtree(tree, ignore_errors=True)
    print("\n| mutation | file | result | killed by |\n|---|---|---|---|")
    for (name, result, by, _), m in zip(rows, todo):
        print("| %s | %s | %s | %s |" % (name, m.path, result, by))
    survived = [r for r in rows if r[1] == "SURVIVED"]
    # a mutation whose note starts with "equivalent" cannot change any output: its survival is expected
    unexpected = [r for r, m in zip(rows, todo) if r[1] == "SURVIVED" and not m.note.startswith("equivalent")]
    print("\n%d mutations: %d killed, %d survived (%d of them equivalent), %d errors"
          % (len(rows), sum(r[1] == "killed" for r in rows), len(survived), len(survived) - len(unexpected),
             sum(r[1] == "error" for r in rows)))
    return 1 if unexpected or any(r[1] == "error" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
