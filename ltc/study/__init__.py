"""The reproduction study: train the small-scale counting nets, evaluate them, write a report.

Stages (tools/reproduce.py runs them in order; each can be run alone):

  data      data/fashion (scenes, items), data/photos (42 real photos shipped in Python
            packages: 34 train / 8 held out), data/study/train_lmdb (the 2,000 train scenes
            plus the 34 train photos repeated PHOTO_REPEAT times), the few-labels probe set
  train     the RUNS below with ``caffe train``, resumed from the newest snapshot of each run
            folder, with a progress line per run every ``poll`` seconds
  photos    (run "photos", issue 27) the Fashion scenes x SCENE_REPEAT plus the 20,000 views of the packaged
            photos (make photos-all), Adam and zero fc biases (the demo's start), tested on the views of the
            held-out photos; evaluated on them (TEST passes, Fig. 3; every snapshot's ``caffe test`` on
            training views, held-out views and val scenes: seen against unseen), on mixed and fixed-size gray scenes,
            and by the in-domain probes (ltc.domain_probe: Fashion items, elpv when installed)
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
from ltc.study.common import (BRANCHES, FIXED_ITEM, FIXED_SCENES, GOALS, ITEMS_TRAIN, ITEMS_VAL,  # noqa: F401
                              PHOTO_REPEAT, PHOTO_SOLVER, PHOTOS_STUDY_TRAIN, PHOTOS_TEST, SCENE_REPEAT,
                              VIEWS_TEST, VIEWS_TRAIN, PHOTOS_TRAIN, PROBE_LAYERS, PROBE_PER_CLASS, PROBE_TRAIN, REPO, RUNS, SCENES_TRAIN,
                              SCENES_VAL, STUDY_TRAIN, TRAJECTORY_EVERY, Runner, StudyError, cli_args, models,
                              random_seed, solver)
from ltc.study.train import (check_disjoint, latest_state, prepare_data, prepare_photo_data, progress_line,  # noqa: F401
                             save_random_init, train_command, train_runs)
from ltc.study.report import demo_summary, goals, train_partner, write_report  # noqa: F401
from ltc.study.evaluate import (TEST_OUTPUTS, domain_probe, evaluate, evaluate_photos, final_model, parse_caffe_test,  # noqa: F401
                                photo_gap, probe_summary, source_test, tail_means, update_results)
