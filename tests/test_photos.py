"""data_prep/photos.py and ltc/photos.py on tiny generated images: licences, the photo check,
duplicates, the held-out rule, crop views (distinct, downsample only) and the LMDB they go into."""
import csv
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from ltc import REPO, lmdb_io
from ltc import photos as ph

from conftest import load_script

prep = load_script("data_prep/photos.py")


def natural(h, w, seed=0):
    """A photo-like image: smooth shading plus texture and noise (many gray levels)."""
    rng = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = 120 + 60 * np.sin(xx / (7.0 + seed)) * np.cos(yy / 11.0) + rng.normal(0, 12, (h, w))
    img = np.stack([base, base * 0.8 + 30, 255 - base], axis=2)
    return np.clip(img, 0, 255).astype(np.uint8)


def drawing(h, w):
    img = np.full((h, w, 3), 255, np.uint8)
    cv2.rectangle(img, (5, 5), (w // 2, h // 2), (0, 0, 255), -1)
    cv2.circle(img, (w // 2, h // 2), min(h, w) // 4, (255, 0, 0), -1)
    return img


DEP5 = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/

Files: *
Copyright: someone
License: GPL-2+

Files: nature/*.jpg
 other/x.png
Copyright: a photographer
License: CC-BY-SA-4.0

Files: 16.04/Bridge_by_X.jpg
Copyright: X
License: CC-BY-4.0
"""


def test_dep5_licence_suffix_basename_and_last_match():
    st = ph.parse_dep5(DEP5)
    assert st[1] == (["nature/*.jpg", "other/x.png"], "CC-BY-SA-4.0")
    assert ph.licence_for("/usr/share/backgrounds/mate/nature/Aqua.jpg", st) == "CC-BY-SA-4.0"
    assert ph.licence_for("/usr/share/backgrounds/mate/other/x.png", st) == "CC-BY-SA-4.0"
    assert ph.licence_for("/usr/share/backgrounds/mate/desktop/a.png", st) == "GPL-2+"
    # installed without the source folder: the file name of a wildcard-free pattern still matches
    assert ph.licence_for("/usr/share/backgrounds/Bridge_by_X.jpg", st) == "CC-BY-4.0"
    assert ph.licence_for("/x/y.png", ph.parse_dep5("Files: a/*.png\nLicense: MIT\n")) == "unknown"


def test_automatic_check_tells_drawings_from_photos():
    ent_p, _ = ph.auto_stats(natural(300, 400))
    ent_d, top_d = ph.auto_stats(drawing(300, 400))
    assert ph.looks_like_photo(ent_p) and not ph.looks_like_photo(ent_d)
    assert ent_d < 2.0 < ph.MIN_ENTROPY <= ent_p
    assert top_d > 0.99


def scene(seed):
    """Large-scale structure (a blurred random field) plus fine noise: what the hash looks at."""
    rng = np.random.RandomState(seed)
    field = cv2.GaussianBlur(rng.normal(0, 1, (480, 640)).astype(np.float32), (0, 0), 40)
    field = 128 + 100 * field / np.abs(field).max() + rng.normal(0, 4, (480, 640))
    return np.clip(np.repeat(field[:, :, None], 3, axis=2), 0, 255).astype(np.uint8)


def test_phash_near_for_a_resized_copy_far_for_another_photo():
    a = scene(1)
    small = cv2.resize(a, (320, 240), interpolation=cv2.INTER_AREA)
    other = scene(5)
    assert ph.hamming(ph.phash(a), ph.phash(small)) <= ph.PHASH_MAX_DIST
    assert ph.hamming(ph.phash(a), ph.phash(other)) > 3 * ph.PHASH_MAX_DIST


def test_dedupe_keeps_the_largest_and_marks_the_rest():
    rows = [dict(id="a-small", sha256="s1", phash=0b1011, width=100, height=100, candidate=True, group=""),
            dict(id="a-big", sha256="s2", phash=0b1010, width=400, height=300, candidate=True, group=""),
            dict(id="a-copy", sha256="s2", phash=0b1010, width=400, height=300, candidate=True, group=""),
            dict(id="b", sha256="s3", phash=(1 << 64) - 1, width=50, height=50, candidate=True, group=""),
            dict(id="art", sha256="s4", phash=0b1010, width=900, height=900, candidate=False, group="")]
    ph.dedupe(rows, max_dist=2)
    dup = {r["id"]: r.get("duplicate_of") for r in rows}
    assert dup == {"a-small": "a-big", "a-big": None, "a-copy": "a-big", "b": None, "art": None}


def test_split_rule_is_seeded_by_group_and_fixed_splits_win():
    groups = ["g%d" % i for i in range(2000)]
    s1 = [ph.split_of(g, 1701, 0.15) for g in groups]
    assert s1 == [ph.split_of(g, 1701, 0.15) for g in groups]
    frac = s1.count("val") / float(len(groups))
    assert 0.12 < frac < 0.18          # binomial sd of 2000 draws at 0.15: 0.008
    assert s1 != [ph.split_of(g, 1702, 0.15) for g in groups]
    assert ph.split_of("g1", 1701, 0.15, fixed={"g1": "val"}) == "val"
    assert ph.split_of("g1", 1701, 0.0) == "train"


def test_views_are_distinct_in_bounds_and_never_upsampled():
    photos = [(640, 480), (200, 900), (256, 256), (3000, 2000)]
    rng = np.random.RandomState(0)
    boxes = ph.sample_views(photos, 3000, rng, size=256)
    assert len(set(boxes)) == 3000
    used = {b[0] for b in boxes}
    assert 1 not in used and used == {0, 2, 3}           # the 200-px-wide photo would need upsampling
    for i, x, y, s in boxes:
        w, h = photos[i]
        assert 256 <= s <= min(w, h) and 0 <= x <= w - s and 0 <= y <= h - s
    sides = np.array([s for i, _, _, s in boxes if i == 3])
    assert sides.min() < 400 and sides.max() > 1500      # several scales of the large photo
    assert all(s == 256 for i, _, _, s in boxes if i == 2)
    # groups weigh equally: 9 photos of one series against one photo alone
    boxes = ph.sample_views([(400, 400)] * 10, 4000, np.random.RandomState(1), size=256,
                            groups=["series"] * 9 + ["alone"])
    alone = sum(b[0] == 9 for b in boxes) / 4000.0
    assert 0.45 < alone < 0.55           # binomial sd at 4000 draws: 0.008
    with pytest.raises(ph.PhotoError, match="distinct"):
        ph.sample_views([(256, 256)], 2, np.random.RandomState(0), size=256)
    with pytest.raises(ph.PhotoError, match="shorter side"):
        ph.sample_views([(100, 300)], 1, np.random.RandomState(0), size=256)


def test_cut_view_downsamples_the_box():
    img = natural(600, 800, 2)
    v = ph.cut_view(img, 100, 50, 512, 256)
    assert v.shape == (256, 256, 3)
    ref = cv2.resize(img[50:562, 100:612], (256, 256), interpolation=cv2.INTER_AREA)
    assert np.array_equal(v, ref)
    assert np.array_equal(ph.cut_view(img, 3, 4, 256, 256), img[4:260, 3:259])
    with pytest.raises(ph.PhotoError, match="upsample"):
        ph.cut_view(img, 0, 0, 200, 256)
    with pytest.raises(ph.PhotoError, match="outside"):
        ph.cut_view(img, 700, 0, 256, 256)


def test_frame_indices_spread_evenly():
    assert ph.video_frame_indices(80, 8) == [5, 15, 25, 35, 45, 55, 65, 75]
    assert ph.video_frame_indices(3, 8) == [0, 1, 2]


def test_candidates_allow_deny_and_sequence_thinning(tmp_path, monkeypatch):
    files = []
    for n in ("keep.png", "starry_night.jpg", "other.png"):
        p = tmp_path / n
        cv2.imwrite(str(p), natural(300, 300))
        files.append(str(p))
    for i in range(20):
        p = tmp_path / "seq" / ("image.%04d.pgm" % i)
        p.parent.mkdir(exist_ok=True)
        cv2.imwrite(str(p), natural(300, 300, i)[:, :, 0])
        files.append(str(p))
    monkeypatch.setitem(ph.ALLOW, "fake-pkg", [(str(tmp_path / "keep.png"), None, "still"),
                                               (str(tmp_path / "seq" / "image.*.pgm"), "fake-seq", "sequence")])
    rows = ph.candidates("fake-pkg", files, frames=4)
    by = {os.path.basename(r["path"]): r for r in rows}
    assert by["keep.png"]["curated"] == "photo"
    assert by["starry_night.jpg"]["reason"] == "painting"
    assert by["other.png"]["reason"] == "not on the allow list"
    taken = sorted(os.path.basename(r["path"]) for r in rows if r.get("group") == "fake-seq" and not r.get("skip"))
    assert taken == ["image.0002.pgm", "image.0007.pgm", "image.0012.pgm", "image.0017.pgm"]


def _manifest(tmp_path, specs):
    """A manifest CSV of generated photos: specs = [(id, w, h, split, group)]."""
    rows = []
    for pid, w, h, split, group in specs:
        p = tmp_path / (pid + ".png")
        cv2.imwrite(str(p), natural(h, w, len(rows)))
        rows.append(dict(id=pid, package="test", version="", path=str(p), member="", licence="CC0", sha256="x",
                         phash=0, width=w, height=h, entropy=6.0, top16=0.1, auto_photo=True, curated="photo",
                         reason="", duplicate_of="", group=group, split=split, kept=True))
    path = str(tmp_path / "manifest.csv")
    prep.write_manifest(rows, path)
    return path


def test_views_lmdb_matches_the_recorded_boxes(tmp_path):
    man = _manifest(tmp_path, [("p1", 640, 480, "train", "g1"), ("p2", 300, 300, "train", "g2"),
                               ("p3", 100, 100, "train", "g3"), ("q1", 500, 400, "val", "g4")])
    out = tmp_path / "out"
    rc = prep.main(["--reuse-manifest", "--manifest", man, "--out", str(out), "--views", "60", "--val-views", "7",
                    "--no-progress"])
    assert rc == 0
    with open(out / "views.csv") as f:
        views = list(csv.DictReader(f))
    assert len(views) == 67 and len({v["key"] for v in views}) == 67
    assert {v["photo"] for v in views if v["split"] == "train"} <= {"p1", "p2"}
    assert {v["photo"] for v in views if v["split"] == "val"} == {"q1"}
    imgs = {pid: cv2.imread(str(tmp_path / (pid + ".png"))) for pid in ("p1", "p2", "q1")}
    for split, n in (("train", 60), ("val", 7)):
        got = dict((k, v) for k, v in _read(out / ("%s_views_lmdb" % split)))
        assert len(got) == n
        for v in views:
            if v["split"] == split:
                img, label = lmdb_io.decode_datum(got[v["key"]])
                want = ph.cut_view(imgs[v["photo"]], int(v["x"]), int(v["y"]), int(v["side"]), 256)
                assert label == 0 and np.array_equal(img.transpose(1, 2, 0), want)
    # existing outputs are refused without --overwrite, nothing is lost
    rc = prep.main(["--reuse-manifest", "--manifest", man, "--out", str(out), "--views", "5", "--val-views", "0"])
    assert rc == 2 and len(list(_read(out / "train_views_lmdb"))) == 60


def _read(path):
    import lmdb
    env = lmdb.open(str(path), readonly=True, lock=False)
    try:
        with env.begin() as txn:
            return [(bytes(k).decode(), bytes(v)) for k, v in txn.cursor()]
    finally:
        env.close()


def test_group_in_both_splits_is_refused(tmp_path, capsys):
    man = _manifest(tmp_path, [("p1", 300, 300, "train", "g"), ("p2", 300, 300, "val", "g")])
    rc = prep.main(["--reuse-manifest", "--manifest", man, "--out", str(tmp_path / "o"), "--views", "3",
                    "--val-views", "1", "--no-progress"])
    assert rc == 2 and "groups in both splits: g" in capsys.readouterr().err


def test_changed_photo_is_refused(tmp_path, capsys):
    man = _manifest(tmp_path, [("p1", 300, 300, "train", "g")])
    cv2.imwrite(str(tmp_path / "p1.png"), natural(310, 300))
    rc = prep.main(["--reuse-manifest", "--manifest", man, "--out", str(tmp_path / "o"), "--views", "3",
                    "--val-views", "0", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "p1.png: now 300x310, the manifest says 300x300" in err
    assert not os.path.exists(tmp_path / "o" / "train_views_lmdb")


def test_missing_manifest_and_missing_package_are_named(tmp_path, monkeypatch):
    res = subprocess.run([sys.executable, os.path.join(REPO, "data_prep", "photos.py"), "--reuse-manifest",
                          "--manifest", str(tmp_path / "none.csv"), "--out", str(tmp_path)],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "none.csv' does not exist" in res.stderr and "Traceback" not in res.stderr
    monkeypatch.setattr(ph, "PACKAGES", ("no-such-package-ltc-test",))
    rc = prep.main(["--manifest-only", "--manifest", str(tmp_path / "m.csv"), "--out", str(tmp_path)])
    assert rc == 2 and not os.path.exists(tmp_path / "m.csv")


def test_committed_manifest_is_consistent():
    """The committed manifest: kept photos are curated and pass the check, no group straddles the
    splits, no kept sha256 repeats, and the held-out photos of data/photos (embedded.py) stay held out."""
    rows = prep.read_manifest(prep.MANIFEST)
    kept = [r for r in rows if r["kept"] == "1"]
    assert len(kept) >= 150
    assert all(r["curated"] == "photo" and r["auto_photo"] == "1" and not r["duplicate_of"] for r in kept)
    assert len({r["sha256"] for r in kept}) == len(kept)
    splits = {}
    for r in kept:
        splits.setdefault(r["group"], set()).add(r["split"])
    assert all(len(s) == 1 for s in splits.values())
    from ltc import embedded_photos as embedded
    names = ["skimage_" + n for n in embedded.SKIMAGE_PHOTOS + embedded.SKIMAGE_MORE_PHOTOS]
    names += ["sklearn_" + n for n in embedded.SKLEARN_PHOTOS] + ["matplotlib_grace_hopper.jpg"]
    names += ["foolbox_imagenet_%s" % os.path.basename(r["path"]).split("imagenet_")[1]
              for r in rows if r["package"] == "python:foolbox"]
    _, val = embedded.split_photos(sorted((n, n) for n in names))
    held = {"embedded-" + n for n, _ in val}
    assert held and all(r["split"] == "val" for r in kept if r["group"] in held)


def test_python_package_paths_resolve_without_a_venv_path():
    import numpy
    assert ph.resolve_source("numpy/__init__.py") == os.path.abspath(numpy.__file__)
    assert ph.resolve_source("/usr/share/x.png") == "/usr/share/x.png"
    with pytest.raises(ph.PhotoError, match="'no_such_pkg_ltc' is not installed"):
        ph.resolve_source("no_such_pkg_ltc/data/a.png")
    rows = prep.read_manifest(prep.MANIFEST)
    assert not [r["path"] for r in rows if r["package"].startswith("python:") and os.path.isabs(r["path"])]


@pytest.fixture
def fake_package(tmp_path, monkeypatch):
    """One fake Debian package: two stills (one a half-size copy of the other) and a 12-frame sequence;
    the embedded photos left out."""
    root = tmp_path / "pkg"
    (root / "seq").mkdir(parents=True)
    big = scene(3)
    cv2.imwrite(str(root / "big.png"), big)
    cv2.imwrite(str(root / "small.png"), cv2.resize(big, (320, 240), interpolation=cv2.INTER_AREA))
    for i in range(12):
        cv2.imwrite(str(root / "seq" / ("image.%04d.png" % i)), scene(10 + i))
    files = sorted(str(p) for p in root.rglob("*.png"))
    monkeypatch.setattr(ph, "PACKAGES", ("fake-pkg",))
    monkeypatch.setitem(ph.ALLOW, "fake-pkg", [(str(root / "seq" / "image.*.png"), "fake-seq", "sequence"),
                                               (str(root / "*.png"), None, "still")])   # the first match wins
    monkeypatch.setattr(ph, "package_files", lambda pkg: files if pkg == "fake-pkg" else None)
    monkeypatch.setattr(ph, "package_version", lambda pkg: "1.0")
    monkeypatch.setattr(prep, "embedded_rows", lambda install_pip: [])
    return tmp_path


def _kept(path):
    return [r for r in prep.read_manifest(str(path)) if r["kept"] == "1"]


def test_manifest_options_frames_phash_dist_split_seed(fake_package):
    m = fake_package / "m.csv"
    base = ["--manifest-only", "--manifest", str(m), "--out", str(fake_package / "o"), "--val-fraction", "0.5"]
    assert prep.main(base + ["--frames", "3"]) == 0
    kept = _kept(m)
    assert sorted(r["id"] for r in kept if r["group"] != "fake-seq") == ["fake-pkg-pkg-big"]   # small: a near copy
    assert len([r for r in kept if r["group"] == "fake-seq"]) == 3
    assert prep.main(base + ["--frames", "5", "--phash-dist", "0"]) == 0
    kept = _kept(m)
    assert len([r for r in kept if r["group"] == "fake-seq"]) == 5
    splits = []
    for seed in range(1, 9):
        assert prep.main(base + ["--split-seed", str(seed)]) == 0
        splits.append(tuple(sorted((r["group"], r["split"]) for r in _kept(m))))
    assert len(set(splits)) > 1            # 2 groups at 0.5: the seed moves them (8 seeds all alike: 2**-14)


def test_install_option_installs_what_is_missing(fake_package, monkeypatch):
    calls = []
    monkeypatch.setattr(ph, "PACKAGES", ("fake-pkg", "fake-missing"))
    monkeypatch.setattr(prep, "install", lambda pkgs: calls.append(list(pkgs)))
    rc = prep.main(["--manifest-only", "--manifest", str(fake_package / "m.csv"), "--install"])
    assert calls == [["fake-missing"]] and rc == 2          # still missing after the (fake) install: named


def test_seed_option_moves_the_boxes(tmp_path):
    man = _manifest(tmp_path, [("p1", 640, 480, "train", "g1")])
    boxes = []
    for seed in ("1", "2", "1"):
        out = tmp_path / ("o" + seed + str(len(boxes)))
        assert prep.main(["--reuse-manifest", "--manifest", man, "--out", str(out), "--views", "20",
                          "--val-views", "0", "--seed", seed, "--no-progress"]) == 0
        with open(out / "views.csv") as f:
            boxes.append([(r["x"], r["y"], r["side"]) for r in csv.DictReader(f)])
    assert boxes[0] == boxes[2] and boxes[0] != boxes[1]
