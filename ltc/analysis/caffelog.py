"""Parse a Caffe training log (glog lines of ``caffe train``) into iterations, losses,
learning rates and test outputs."""
import re
from datetime import datetime

_GLOG = re.compile(r"^[IWEF](\d{4}|\d{8}) (\d\d):(\d\d):(\d\d)\.(\d+)\s+\d+\s+\S+\]\s?(.*)$")
_ITER_LOSS = re.compile(r"Iteration (\d+)(?: \(([^)]*)\))?, loss = ([-+\w.]+)")
_LR = re.compile(r"Iteration (\d+), lr = ([-+\w.]+)")
_TESTING = re.compile(r"Iteration (\d+), Testing net \(#(\d+)\)")
_OUTPUT = re.compile(r"(Train|Test) net output #(\d+): (\S+) = ([-+\w.]+)")


def _glog_seconds(m):
    """Seconds of a glog timestamp (IYYYYMMDD or IMMDD; a missing year counts as 2000)."""
    date = m.group(1)
    year = int(date[:4]) if len(date) == 8 else 2000
    t = datetime(year, int(date[-4:-2]), int(date[-2:]), int(m.group(2)), int(m.group(3)), int(m.group(4)))
    return (t - datetime(1970, 1, 1)).total_seconds() + float("0." + m.group(5))


def parse_caffe_log(text):
    """Caffe's glog training log -> dict(train=[rows], test=[rows], lr=[(iter, lr)]).

    train rows: iteration, seconds (since the log's first timestamp), loss (the displayed,
    smoothed loss), lr (from the "Iteration N, lr = ..." line of the same iteration, None
    for the final "Iteration N, loss" line, which has none), and one key per
    "Train net output #k: name = value" (``train_<name>``). test rows: iteration, seconds,
    net (test net number), and ``test_<name>`` per "Test net output". Lines without a glog
    prefix are parsed too (seconds = None).
    """
    train, test, lrs = [], [], []
    t0 = None
    cur_train, cur_test = None, None
    day_fix, last_t = 0.0, None
    for raw in text.splitlines():
        m = _GLOG.match(raw)
        if m:
            t = _glog_seconds(m)
            if last_t is not None and t + day_fix < last_t - 43200:   # year-less log crossed new year
                day_fix += 366 * 86400.0
            t += day_fix
            last_t = t
            if t0 is None:
                t0 = t
            secs, msg = t - t0, m.group(6)
        else:
            secs, msg = None, raw
        mm = _LR.search(msg)
        if mm:
            lr = float(mm.group(2))
            lrs.append((int(mm.group(1)), lr))
            if cur_train is not None and cur_train["iteration"] == int(mm.group(1)):
                cur_train["lr"] = lr
            continue
        mm = _TESTING.search(msg)
        if mm:
            cur_test = dict(iteration=int(mm.group(1)), seconds=secs, net=int(mm.group(2)))
            test.append(cur_test)
            continue
        mm = _ITER_LOSS.search(msg)
        if mm:
            cur_train = dict(iteration=int(mm.group(1)), seconds=secs, loss=float(mm.group(3)), lr=None)
            train.append(cur_train)
            continue
        mm = _OUTPUT.search(msg)
        if mm:
            row = cur_train if mm.group(1) == "Train" else cur_test
            if row is not None:
                row["%s_%s" % (mm.group(1).lower(), mm.group(3))] = float(mm.group(4))
    return dict(train=train, test=test, lr=lrs)


