"""The reproduction study: train the small-scale counting nets, evaluate them, write a report.

Stages (tools/reproduce.py runs them in order; each can be run alone):

  data      data/fashion (scenes, items), data/photos (42 real photos shipped in Python
            packages: 34 train / 8 held out), data/study/train_lmdb (the 2,000 train scenes
            plus the 34 train photos repeated PHOTO_REPEAT times), the few-labels probe set
  train     the RUNS below with ``caffe train``, resumed from the newest snapshot of each run
            folder, with a progress line per run every ``poll`` seconds
  evaluate  count-check (+ the least-squares count map), loss terms at the end, TEST loss on the
            held-out photos, mean-vector sparsity on them, linear probe against random init
            (same probe, data and seeds), Table 5 (mixed vs single-method), training curves
  report    OUT/report.md with every number, the goals it meets or misses, the PNGs

Modules: common (settings, StudyError, the command log Runner, solver and snapshot look-ups),
train (the data and train stages), evaluate, report. Every number comes from a library call of
this repository (ltc.analysis.subcommands, ltc.surgery, ltc.probe; the data from ltc.fashion and
ltc.embedded_photos); OUT/commands.txt lists, for each, the command line that computes the same
(tools/analyze.py, tools/port_weights.py, tools/linear_probe.py, data_prep/*.py), and each
training's ``caffe train`` command, the one step that runs as a subprocess.
"""
from ltc.study.common import (BRANCHES, GOALS, ITEMS_TRAIN, ITEMS_VAL, PHOTO_REPEAT, PHOTOS_TEST,  # noqa: F401
                              PHOTOS_TRAIN, PROBE_LAYERS, PROBE_PER_CLASS, PROBE_TRAIN, REPO, RUNS, SCENES_TRAIN,
                              SCENES_VAL, STUDY_TRAIN, TRAJECTORY_EVERY, Runner, StudyError, cli_args, models,
                              random_seed, solver)
from ltc.study.train import (check_disjoint, latest_state, prepare_data, progress_line,  # noqa: F401
                             save_random_init, train_command, train_runs)
from ltc.study.report import demo_summary, goals, train_partner, write_report  # noqa: F401
from ltc.study.evaluate import evaluate, final_model, probe_summary, tail_means  # noqa: F401
