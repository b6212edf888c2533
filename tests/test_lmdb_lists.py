"""tools/make_lmdb.py --shuffle / --seed and list-file parsing (ltc/lmdb_build/sources.py): the shuffle
moves images and follows the seed, and list lines are read as convert_imageset reads them."""
import cv2
import lmdb
import numpy as np
import pytest

from conftest import load_script
from ltc import lmdb_build
from ltc import lmdb_io

make_lmdb = load_script("tools/make_lmdb.py")

N_FILES = 24


def read_db(path):
    env = lmdb.open(str(path), readonly=True, lock=False)
    with env.begin() as txn:
        out = [(k.decode(), bytes(v)) for k, v in txn.cursor()]
    env.close()
    return out


def small_image(seed):
    rng = np.random.RandomState(seed)
    return cv2.resize((rng.rand(4, 4, 3) * 255).astype(np.uint8), (24, 24), interpolation=cv2.INTER_LINEAR)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    src = tmp_path_factory.mktemp("shuffle_src")
    for i in range(N_FILES):
        cv2.imwrite(str(src / ("img%02d.png" % i)), small_image(i))
    return src


def build(folder, out, *extra):
    assert make_lmdb.main([str(folder), str(out), "--size", "24", "--no-progress"] + list(extra)) == 0
    return read_db(out)


def test_shuffle_is_seeded_moves_images_and_keeps_the_set(folder, tmp_path):
    plain = build(folder, tmp_path / "plain", "--workers", "0")
    a = build(folder, tmp_path / "a", "--shuffle", "--seed", "5", "--workers", "0")
    a_again = build(folder, tmp_path / "a_again", "--shuffle", "--seed", "5", "--workers", "0")
    a_pool = build(folder, tmp_path / "a_pool", "--shuffle", "--seed", "5", "--workers", "2")
    b = build(folder, tmp_path / "b", "--shuffle", "--seed", "6", "--workers", "0")
    assert len(plain) == N_FILES
    # the same seed gives the same bytes, with 0 or 2 workers
    assert a == a_again == a_pool
    order = lambda db: [k.split("_", 1)[1] for k, _ in db]  # noqa: E731
    # a shuffle moves most files (a seeded permutation of 24, not the identity) ...
    assert sum(x != y for x, y in zip(order(plain), order(a))) >= N_FILES // 2
    # ... and a different seed gives a different order
    assert order(a) != order(b)
    # the same (path, value) pairs each time: only the index in the key changes
    by_path = lambda db: sorted((k.split("_", 1)[1], v) for k, v in db)  # noqa: E731
    assert by_path(plain) == by_path(a) == by_path(b)
    # keys are numbered 0..N-1 in their new order
    assert [k.split("_", 1)[0] for k, _ in a] == ["%08d" % i for i in range(N_FILES)]
    # the shuffled order is the seeded permutation the tool documents
    perm = np.random.RandomState(5).permutation(N_FILES)
    assert order(a) == ["img%02d.png" % i for i in perm]


def _entries(tmp_path, text, files=()):
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    for name in files:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / name), small_image(len(name)))
    lst = tmp_path / "list.txt"
    lst.write_text(text)
    return lmdb_build.read_list_file(str(lst), str(root)), root


def test_list_label_is_after_the_last_space(tmp_path):
    entries, _ = _entries(tmp_path, "my photos/a b c.png 7\nplain.png 3\n", ["my photos/a b c.png", "plain.png"])
    assert [(e.key_path, e.label, e.reason) for e in entries] == [("my photos/a b c.png", 7, None),
                                                                  ("plain.png", 3, None)]


def test_list_missing_label_is_zero_even_with_spaces_in_the_path(tmp_path):
    entries, _ = _entries(tmp_path, "solo.png\nwith space.png\n", ["solo.png", "with space.png"])
    assert [(e.key_path, e.label, e.reason) for e in entries] == [("solo.png", 0, None), ("with space.png", 0, None)]


def test_list_negative_label_and_int32_limits(tmp_path):
    text = "n.png -3\nmax.png %d\nmin.png %d\nbig.png %d\nsmall.png %d\n" % (2 ** 31 - 1, -2 ** 31, 2 ** 31,
                                                                             -2 ** 31 - 1)
    entries, _ = _entries(tmp_path, text, ["n.png", "max.png", "min.png", "big.png", "small.png"])
    got = {e.key_path: (e.label, e.reason) for e in entries}
    assert got["n.png"] == (-3, None)
    assert got["max.png"] == (2 ** 31 - 1, None) and got["min.png"] == (-2 ** 31, None)
    # 2^31 would wrap to -2^31 in Caffe's int32 label: reported, not written
    assert got["big.png"][1].startswith("bad label: list line 4, 2147483648")
    assert got["small.png"][1].startswith("bad label: list line 5")


def test_list_tab_is_not_a_separator_and_is_reported(tmp_path):
    entries, _ = _entries(tmp_path, "t.png\t4\n", ["t.png"])
    (e,) = entries
    assert e.key_path == "t.png\t4" and e.label == 0
    assert e.reason.startswith("bad list line 1: a tab in")


def test_list_labels_reach_the_database(tmp_path):
    files = ["dir x/p q.png", "neg.png", "tab.png", "big.png", "nolabel.png"]
    text = "dir x/p q.png 12\nneg.png -1\ntab.png\t2\nbig.png 2147483648\nnolabel.png\n"
    _, root = _entries(tmp_path, text, files)
    out = tmp_path / "db"
    assert make_lmdb.main([str(tmp_path / "list.txt"), str(out), "--root", str(root), "--size", "24",
                           "--no-progress", "--workers", "0"]) == 0
    labels = {k.split("_", 1)[1]: label for k, _, label in lmdb_io.iter_images(str(out))}
    assert labels == {"dir x/p q.png": 12, "neg.png": -1, "nolabel.png": 0}
    rows = [line.rstrip("\n").split("\t") for line in open(str(out) + ".skipped.tsv")][1:]
    reasons = {int(i): r for i, _, r in rows}
    assert set(reasons) == {2, 3}
    assert reasons[2].startswith("bad list line 3: a tab") and reasons[3].startswith("bad label: list line 4")
