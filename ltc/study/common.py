"""The study's settings, its error, the command log (Runner) and the solver / snapshot look-ups."""
import os
import subprocess
import sys
import time

from ltc import REPO, nets, snapshots

SCENES_TRAIN = "data/fashion/scenes_train_lmdb"
SCENES_VAL = "data/fashion/scenes_val_lmdb"
ITEMS_TRAIN = "data/fashion/items_train_lmdb"
ITEMS_VAL = "data/fashion/items_val_lmdb"
PHOTOS_TRAIN = "data/photos/train_lmdb"
PHOTOS_TEST = "data/photos/val_lmdb"          # held out: never in a training LMDB
STUDY_TRAIN = "data/study/train_lmdb"
PROBE_TRAIN = "data/study/items_%d_per_class_lmdb"
# The photo run (issue 27): the views of data_prep/photos.py (make photos-all) and the mix it trains on.
VIEWS_TRAIN = "data/photos_all/train_views_lmdb"     # 20,000 distinct 256x256 views of the train photos
VIEWS_TEST = "data/photos_all/val_views_lmdb"        # 1,000 views of the held-out photos (whole groups)
PHOTOS_STUDY_TRAIN = "data/study/photos_train_lmdb"
PHOTO_SOLVER = "prototxt/study/photos/solver.prototxt"
# Additivity without size and tint variation: scenes whose items are all FIXED_ITEM px and gray.
FIXED_SCENES = "data/fashion_fixed36_gray"
FIXED_ITEM = 36
SCENE_REPEAT = 5        # 2,000 scenes x 5 = 10,000 beside 20,000 views: a third of the samples are scenes
PHOTO_REPEAT = 8        # 34 photos x 8 = 272 of 2,272 samples (12 %): ~4 photos in a batch of 32
PROBE_PER_CLASS = 20    # few labels: 20 Fashion items per class (200 training images)

# The committed nets (ltc/nets.py VARIANTS "study/main", "study/linear").
RUNS = (("main", "prototxt/study/main/solver.prototxt"),
        ("linear", "prototxt/study/linear/solver.prototxt"),
        ("photos", PHOTO_SOLVER))
# Table 5's single-method run branches off the main run: it starts from main's snapshot
# STUDY_SINGLE_METHOD_ITERS before the end (the same weights and solver state) and trains on with
# bilinear downsampling only, for as many iterations as main trains on with a random method per
# batch. The two rows then differ only in the downsampling of their last leg: cheap on 2 cores,
# and a controlled comparison.
BRANCHES = {"linear": ("main", nets.STUDY_ITERS - nets.STUDY_SINGLE_METHOD_ITERS)}

TRAJECTORY_EVERY = 500  # iterations between the snapshots of the norm trajectory

GOALS = dict(spearman=0.97, exact=0.80, within1=0.95, probe_margin=3.0,
             heldout_count_term=2.5, fixed_exact=0.80)

PROBE_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "pool5")


class StudyError(Exception):
    """A stage cannot run (missing input, failed command); the message says which."""


# ----------------------------------------------------------------------------- commands
def cli_args(**options):
    """Command-line arguments of keyword options: name_x=v -> --name-x v (lists: several values,
    True: the flag alone, None / False: left out)."""
    argv = []
    for name, v in options.items():
        flag = "--" + name.replace("_", "-")
        if v is None or v is False:
            continue
        if v is True:
            argv.append(flag)
        elif isinstance(v, (list, tuple)):
            argv += [flag] + [str(x) for x in v]
        else:
            argv += [flag, str(v)]
    return argv


class Runner:
    """Runs the study's steps from the repository root and logs, for each, the command line of this
    repository that does the same (OUT/commands.txt): a library call as the script that makes it,
    training as its ``caffe train`` command."""

    def __init__(self, out, python=sys.executable, caffe=None, dry=False, reuse=True):
        self.out = out
        self.python = python
        self.caffe = caffe or os.path.join(REPO, ".venv", "bin", "caffe")
        self.dry = dry
        self.reuse = reuse
        if not dry:  # a dry run writes nothing
            os.makedirs(out, exist_ok=True)
        self.log_path = os.path.join(out, "commands.txt")

    def note(self, argv):
        line = " ".join(argv).replace(REPO + "/", "")
        if not self.dry:
            with open(self.log_path, "a") as f:
                f.write(line + "\n")
        print("$ " + line, flush=True)
        return line

    def call(self, script, args, fn, done=None):
        """Run ``fn()``, the library call that does what ``python script args`` does, logging that
        command line; returns fn's result (None in a dry run). With ``done`` (the file the step
        writes last), skip the step when that file is newer than every existing file among the
        arguments, NAME=PATH ones included (an earlier evaluation of the same inputs). A failure of the step (bad input,
        a failed build) is a StudyError naming the command."""
        argv = [self.python, os.path.join(REPO, script)] + [str(a) for a in args]
        # an input is an argument that names a file, alone or as NAME=PATH (domain_probe's --model)
        paths = [a.partition("=")[2] if "=" in a and not os.path.isfile(os.path.join(REPO, a)) else a
                 for a in argv[2:]]
        if self.reusable(done, paths):
            self.note(argv + ["# reused " + done])
            return None
        line = self.note(argv)
        if self.dry:
            return None
        t0 = time.time()
        try:
            res = fn()
        except (ValueError, OSError, RuntimeError, subprocess.CalledProcessError) as e:
            raise StudyError("%s: %s: %s" % (line, type(e).__name__, e))
        self.log_time(t0)
        return res

    def reusable(self, done, inputs):
        """True when ``done`` (the file a step writes last) exists and is newer than every existing file
        among ``inputs`` (repository-relative paths; other strings are ignored): an earlier run of the
        same step on the same inputs. Never in a dry run or with reuse off."""
        if not done or not self.reuse or self.dry:
            return False
        d = os.path.join(REPO, done)
        files = [os.path.join(REPO, a) for a in inputs
                 if a and os.path.isfile(os.path.join(REPO, a)) and os.path.join(REPO, a) != d]
        return os.path.isfile(d) and all(os.path.getmtime(d) > os.path.getmtime(f) for f in files)

    def log_time(self, t0):
        """Write the wall time since ``t0`` under the last logged command (every number's step)."""
        with open(self.log_path, "a") as f:
            f.write("#   %.0f s\n" % (time.time() - t0))


# ----------------------------------------------------------------------------- solvers and snapshots
def solver(path):
    """The caffe_pb2.SolverParameter of a (repository-relative) solver prototxt."""
    try:
        return snapshots.read_solver(os.path.join(REPO, path))
    except snapshots.SnapshotError as e:
        raise StudyError(str(e))


def models(prefix):
    """{iteration: caffemodel path} of the snapshots written under a (repository-relative) ``prefix``."""
    return dict(snapshots.list_models(os.path.join(REPO, prefix)))


def random_seed(solver_path):
    """The solver's random_seed (1701 when it sets none)."""
    sp = solver(solver_path)
    return sp.random_seed if sp.HasField("random_seed") else 1701
