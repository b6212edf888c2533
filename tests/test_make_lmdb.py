"""tools/make_lmdb.py and ltc/lmdb_build/: bad inputs, pixels, safety, speed-free."""
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib

import cv2
import lmdb
import numpy as np
import pytest
from PIL import Image
from caffe.proto import caffe_pb2

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from ltc import lmdb_build
from ltc import lmdb_io
from conftest import load_script

make_lmdb = load_script("tools/make_lmdb.py")

TOOL = os.path.join(ROOT, "tools", "make_lmdb.py")


def photo(h, w, seed=0):
    """A smooth random colour image (JPEG-friendly) with a marked corner."""
    rng = np.random.RandomState(seed)
    small = (rng.rand(max(2, h // 16), max(2, w // 16), 3) * 255).astype(np.uint8)
    small[:, :, 2] //= 3  # keep the content's red low, so only the marker block is bright red
    img = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    img[: h // 5, : w // 5] = (0, 0, 255)  # red top-left block: shows orientation
    return img


def read_db(path):
    env = lmdb.open(path, readonly=True, lock=False)
    with env.begin() as txn:
        out = {k.decode(): v for k, v in txn.cursor()}
    env.close()
    return out


def images_by_path(path):
    """{relative path: (image, label)} from an LMDB written by make_lmdb."""
    return {k.split("_", 1)[1]: lmdb_io.datum_to_image(v) for k, v in read_db(path).items()}


def png_with_header(path, w, h):
    """A tiny file whose PNG header claims w x h (a decompression-bomb stand-in)."""
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(data)


# Expected outcome per file: "ok" or the category of the skip reason.
def make_bad_folder(d):
    d = str(d)
    os.makedirs(os.path.join(d, "sub"), exist_ok=True)
    exp = {}
    base = photo(120, 160, 1)

    def put(name, expect, img=None, params=()):
        if img is not None:
            assert cv2.imwrite(os.path.join(d, name), img, list(params))
        exp[name] = expect

    put("good.jpg", "ok", base, [cv2.IMWRITE_JPEG_QUALITY, 92])
    put("sub/good.png", "ok", photo(90, 70, 2))
    put("upper.JPEG", "ok", photo(64, 64, 3))
    put("gray.png", "ok", cv2.cvtColor(base, cv2.COLOR_BGR2GRAY))
    put("gray.jpg", "ok", cv2.cvtColor(base, cv2.COLOR_BGR2GRAY))
    put("rgba.png", "ok", np.dstack([base, np.full(base.shape[:2], 9, np.uint8)]))
    put("bit16.png", "ok", base.astype(np.uint16) * 257)
    put("image.bmp", "ok", base)
    Image.fromarray(base[:, :, ::-1].copy()).convert("P").save(os.path.join(d, "palette.png"))
    exp["palette.png"] = "ok"
    Image.fromarray(base[:, :, ::-1].copy()).convert("LA").save(os.path.join(d, "gray_alpha.png"))
    exp["gray_alpha.png"] = "ok"
    Image.fromarray(base[:, :, ::-1].copy()).convert("CMYK").save(os.path.join(d, "cmyk.jpg"), quality=95)
    exp["cmyk.jpg"] = "ok"
    ex = Image.Exif()
    ex[0x0112] = 6  # rotate 90 degrees clockwise on display
    Image.fromarray(base[:, :, ::-1].copy()).save(os.path.join(d, "exif_rot.jpg"), exif=ex.tobytes(), quality=95)
    exp["exif_rot.jpg"] = "ok"
    # bad ones
    good = open(os.path.join(d, "good.jpg"), "rb").read()
    open(os.path.join(d, "truncated.jpg"), "wb").write(good[: len(good) // 2])
    exp["truncated.jpg"] = "truncated"
    pngb = open(os.path.join(d, "sub/good.png"), "rb").read()
    open(os.path.join(d, "truncated.png"), "wb").write(pngb[: len(pngb) // 2])
    exp["truncated.png"] = "undecodable"
    corrupt = bytearray(good)
    corrupt[2:200] = os.urandom(198)
    open(os.path.join(d, "corrupt.jpg"), "wb").write(bytes(corrupt))
    exp["corrupt.jpg"] = "undecodable"
    open(os.path.join(d, "notes.jpg"), "w").write("this is not an image\n" * 20)
    exp["notes.jpg"] = "undecodable"
    open(os.path.join(d, "empty.png"), "wb").close()
    exp["empty.png"] = "empty file"
    put("tiny.png", "tiny", photo(10, 40, 4))
    png_with_header(os.path.join(d, "bomb.png"), 20000, 20000)
    exp["bomb.png"] = "huge"
    os.symlink(os.path.join(d, "does_not_exist.jpg"), os.path.join(d, "broken.jpg"))
    exp["broken.jpg"] = "broken symlink"
    os.mkfifo(os.path.join(d, "fifo.jpg"))
    exp["fifo.jpg"] = "not a regular file"
    open(os.path.join(d, "readme.txt"), "w").write("not listed: no image extension")
    return exp


def check_outcome(out, exp, extra_skips=None):
    """The database holds exactly the 'ok' files; the report names every other one with its reason."""
    written = images_by_path(out)
    assert sorted(written) == sorted(k for k, v in exp.items() if v == "ok")
    rows = [line.rstrip("\n").split("\t") for line in open(out + ".skipped.tsv")][1:]
    got = {path: reason for _, path, reason in rows}
    want = {k: v for k, v in exp.items() if v != "ok"}
    want.update(extra_skips or {})
    assert sorted(got) == sorted(want)
    for path, cat in want.items():
        assert got[path].startswith(cat), (path, got[path], cat)
    return written


def test_bad_inputs_folder(tmp_path):
    src = tmp_path / "src"
    exp = make_bad_folder(src)
    out = str(tmp_path / "db")
    # through the worker pool (small_job=0: no in-process shortcut for this small folder)
    s = lmdb_build.build_lmdb(lmdb_build.collect_folder(str(src)), out, workers=2, small_job=0, progress=False)
    written = check_outcome(out, exp)
    assert s["written"] == sum(v == "ok" for v in exp.values())
    assert s["skipped"] == sum(v != "ok" for v in exp.values())
    # conversions: shape, gray -> 3 equal channels, 16-bit >> 8, EXIF orientation applied
    for path, (img, label) in written.items():
        assert img.shape == (256, 256, 3) and img.dtype == np.uint8 and label == 0
    g = written["gray.png"][0]
    assert np.array_equal(g[:, :, 0], g[:, :, 1]) and np.array_equal(g[:, :, 1], g[:, :, 2])
    ref = cv2.resize(cv2.imread(str(src / "image.bmp")), (256, 256), interpolation=cv2.INTER_LINEAR)
    assert np.array_equal(written["bit16.png"][0], ref)
    assert np.array_equal(written["rgba.png"][0], ref)
    rot = written["exif_rot.jpg"][0]
    upright = cv2.resize(cv2.imread(str(src / "exif_rot.jpg")), (256, 256), interpolation=cv2.INTER_LINEAR)
    raw = cv2.resize(cv2.imread(str(src / "exif_rot.jpg"), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION),
                     (256, 256), interpolation=cv2.INTER_LINEAR)
    assert np.array_equal(rot, upright) and not np.array_equal(rot, raw)
    # rotated 90 clockwise: the red block moved from the top-left to the top-right corner
    def is_red(px):
        return px[2] > 200 and px[0] < 60 and px[1] < 60
    assert is_red(written["good.jpg"][0][10, 10]) and not is_red(written["good.jpg"][0][10, 245])
    assert is_red(rot[10, 245]) and not is_red(rot[10, 10])
    cm = written["cmyk.jpg"][0].astype(int)
    assert np.abs(cm - ref.astype(int)).mean() < 6  # CMYK decoded to the same colours, not inverted


def test_bad_inputs_list_file(tmp_path):
    src = tmp_path / "src"
    exp = make_bad_folder(src)
    lines = ["%s %d" % (n, i) for i, n in enumerate(sorted(exp))] + ["good.jpg 1", "./sub/good.png 2",
                                                                      "nowhere/missing.jpg 3", "", "# comment",
                                                                      "image.bmp x1"]
    lst = tmp_path / "list.txt"
    lst.write_text("\n".join(lines) + "\n")
    out = str(tmp_path / "db_list")
    assert make_lmdb.main([str(lst), out, "--root", str(src), "--workers", "0", "--no-progress"]) == 0
    rows = [line.rstrip("\n").split("\t") for line in open(out + ".skipped.tsv")][1:]
    reasons = [r for _, _, r in rows]
    assert sum(r.startswith("duplicate") for r in reasons) == 2
    assert sum(r.startswith("missing file") for r in reasons) == 1
    assert sum(r.startswith("bad label") for r in reasons) == 1
    written = images_by_path(out)
    assert sorted(written) == sorted(k for k, v in exp.items() if v == "ok")
    labels = {n: i for i, n in enumerate(sorted(exp))}
    for path, (_, label) in written.items():
        assert label == labels[path]


@pytest.mark.parametrize("mode", ["warp", "shorter-crop"])
def test_pixels_equal_cv2_reference(tmp_path, mode):
    src = tmp_path / "src"
    src.mkdir()
    shapes = {"land.jpg": (375, 500), "port.png": (500, 333), "small.png": (100, 180), "square.jpg": (256, 256)}
    for i, (name, (h, w)) in enumerate(shapes.items()):
        cv2.imwrite(str(src / name), photo(h, w, 10 + i))
    out = str(tmp_path / "db")
    assert make_lmdb.main([str(src), out, "--resize", mode, "--size", "227", "--no-progress", "--workers", "1"]) == 0
    got = images_by_path(out)
    assert sorted(got) == sorted(shapes)
    for name in shapes:
        img = cv2.imread(str(src / name))
        h, w = img.shape[:2]
        if mode == "warp":
            ref = cv2.resize(img, (227, 227), interpolation=cv2.INTER_LINEAR)
        else:
            s = 227.0 / min(h, w)
            nw, nh = max(227, int(round(w * s))), max(227, int(round(h * s)))
            big = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR) if (nh, nw) != (h, w) else img
            y0, x0 = (nh - 227) // 2, (nw - 227) // 2
            ref = big[y0:y0 + 227, x0:x0 + 227]
        assert np.array_equal(got[name][0], ref), name


@pytest.mark.parametrize("fmt", ["png", "jpg"])
def test_encoded_round_trip(tmp_path, fmt):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        cv2.imwrite(str(src / ("p%d.png" % i)), photo(200, 300, 20 + i))
    raw, enc = str(tmp_path / "raw"), str(tmp_path / "enc")
    assert make_lmdb.main([str(src), raw, "--no-progress", "--workers", "0"]) == 0
    assert make_lmdb.main([str(src), enc, "--no-progress", "--encoded", "--encode-format", fmt, "--workers", "0"]) == 0
    r, e = read_db(raw), read_db(enc)
    assert sorted(r) == sorted(e)
    for k in r:
        d = caffe_pb2.Datum()
        d.ParseFromString(e[k])
        assert d.encoded and d.data[:4] == (b"\x89PNG" if fmt == "png" else b"\xff\xd8\xff\xe0")
        a, _ = lmdb_io.datum_to_image(r[k])
        b, _ = lmdb_io.datum_to_image(e[k])
        if fmt == "png":
            assert np.array_equal(a, b)
        else:
            ok, buf = cv2.imencode(".jpg", a, [cv2.IMWRITE_JPEG_QUALITY, 95])
            assert np.array_equal(b, cv2.imdecode(buf, cv2.IMREAD_COLOR))
            assert np.abs(a.astype(int) - b.astype(int)).mean() < 3


def test_list_and_folder_give_same_database(tmp_path):
    src = tmp_path / "src"
    (src / "b").mkdir(parents=True)
    for i, name in enumerate(["z.jpg", "a.png", "b/c.jpg", "b/a.png"]):
        cv2.imwrite(str(src / name), photo(60 + 10 * i, 80, 30 + i))
    lst = tmp_path / "list.txt"
    lst.write_text("".join("%s\n" % n for n in sorted(["z.jpg", "a.png", "b/c.jpg", "b/a.png"])))
    a, b = str(tmp_path / "from_folder"), str(tmp_path / "from_list")
    # seed 1 moves every one of the 4 files (seed 5 would be the identity permutation)
    assert make_lmdb.main([str(src), a, "--no-progress", "--shuffle", "--seed", "1"]) == 0
    assert make_lmdb.main([str(lst), b, "--root", str(src), "--no-progress", "--shuffle", "--seed", "1"]) == 0
    da, db = read_db(a), read_db(b)
    assert da == db and len(da) == 4
    plain = str(tmp_path / "plain")
    assert make_lmdb.main([str(src), plain, "--no-progress"]) == 0
    assert sorted(k.split("_", 1)[1] for k in read_db(plain)) == sorted(k.split("_", 1)[1] for k in da)
    names = ["a.png", "b/a.png", "b/c.jpg", "z.jpg"]
    assert [k for k in sorted(read_db(plain))] == ["%08d_%s" % (i, n) for i, n in enumerate(names)]
    perm = np.random.RandomState(1).permutation(4)
    assert [k.split("_", 1)[1] for k in sorted(da)] == [names[i] for i in perm] != names


def test_overwrite_and_nothing_written(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    cv2.imwrite(str(src / "a.png"), photo(50, 50, 1))
    out = str(tmp_path / "db")
    assert make_lmdb.main([str(src), out, "--no-progress"]) == 0
    before = read_db(out)
    cv2.imwrite(str(src / "b.png"), photo(50, 50, 2))
    assert make_lmdb.main([str(src), out, "--no-progress"]) == 2  # refused: exists
    assert read_db(out) == before
    assert make_lmdb.main([str(src), out, "--no-progress", "--overwrite"]) == 0
    assert len(read_db(out)) == 2
    assert not [p for p in os.listdir(tmp_path) if ".partial-" in p or ".old-" in p]
    bad = tmp_path / "bad"
    bad.mkdir()
    open(bad / "x.jpg", "wb").close()
    (bad / "y.png").write_text("nope")
    out2 = str(tmp_path / "db2")
    assert make_lmdb.main([str(bad), out2, "--no-progress"]) == 2
    assert not os.path.exists(out2)
    assert len(open(out2 + ".skipped.tsv").readlines()) == 3


def test_map_grows_when_full(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(24):
        cv2.imwrite(str(src / ("%02d.png" % i)), photo(64, 64, i))
    out = str(tmp_path / "db")
    js = str(tmp_path / "s.json")
    for extra in ([], ["--no-writemap"]):
        assert make_lmdb.main([str(src), out, "--no-progress", "--initial-map-mb", "1", "--batch", "5",
                               "--summary-json", js, "--workers", "0", "--overwrite"] + extra) == 0
        s = json.load(open(js))
        assert s["map_grows"] >= 2 and s["written"] == 24
        assert len(read_db(out)) == 24
        # trimmed to the used pages: about 24 x 3 x 256 x 256 bytes, not the grown map
        assert os.path.getsize(os.path.join(out, "data.mdb")) < 24 * 3 * 256 * 256 * 1.1


def test_header_size_and_truncation():
    img = photo(37, 53, 0)
    for ext in (".jpg", ".png", ".bmp"):
        ok, buf = cv2.imencode(ext, img)
        assert lmdb_build.header_size(buf.tobytes()) == (53, 37), ext
    ok, buf = cv2.imencode(".jpg", img)
    data = buf.tobytes()
    assert not lmdb_build.jpeg_truncated(data)
    assert lmdb_build.jpeg_truncated(data[:-10])
    assert lmdb_build.prepare_image(data, 64, "warp", 16, 53 * 37 - 1)[1].startswith("huge")
    assert lmdb_build.prepare_image(data, 64, "warp", 38, 10 ** 8)[1].startswith("tiny")
    assert lmdb_build.prepare_image(data, 64, "warp", 37, 10 ** 8)[0].shape == (64, 64, 3)


def _children(pid):
    kids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open("/proc/%s/stat" % d) as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        kids.append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    return kids


def _committed(path):
    """Entries committed so far in the LMDB at ``path`` (0 if it cannot be read yet)."""
    try:
        env = lmdb.open(path, readonly=True, lock=False)
    except lmdb.Error:
        return 0
    try:
        return env.stat()["entries"]
    finally:
        env.close()


def _alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_killed_build_leaves_no_output(tmp_path, sig):
    src = tmp_path / "src"
    src.mkdir()
    tile = photo(40, 40, 0)
    for i in range(300):
        cv2.imwrite(str(src / ("%03d.png" % i)), np.roll(tile, i, axis=1))
    out = str(tmp_path / "db")
    proc = subprocess.Popen([sys.executable, TOOL, str(src), out, "--workers", "2", "--delay", "0.02",
                             "--no-progress", "--batch", "20"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    partial = "%s.partial-%d" % (out, proc.pid)
    deadline = time.time() + 300
    while time.time() < deadline and not os.path.isfile(os.path.join(partial, "data.mdb")):
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    while time.time() < deadline and _committed(partial) < 20:  # some batches committed
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    kids = _children(proc.pid)
    assert proc.poll() is None and len(kids) >= 2
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert not os.path.exists(out)
    if sig != signal.SIGKILL:
        assert proc.returncode == 128 + sig
        assert not os.path.exists(partial)
        # the message says what was removed, and it is gone (checked above)
        assert "removed the partial database %s; nothing at %s" % (partial, out) in err.decode(), err
    else:
        assert os.path.isdir(partial)  # left by SIGKILL, but under a name nobody mistakes for OUTPUT
    deadline = time.time() + 300
    while time.time() < deadline and any(_alive(k) for k in kids):
        time.sleep(0.1)
    assert not any(_alive(k) for k in kids), "worker processes outlived the build"
    # a new build cleans the stale partial folder and succeeds
    assert make_lmdb.main([str(src), out, "--no-progress", "--workers", "2"]) == 0
    assert len(read_db(out)) == 300
    assert not os.path.exists(partial)


def test_same_bytes_as_convert_imageset(tmp_path):
    tool = os.path.join(os.path.dirname(sys.executable), "convert_imageset")
    if not os.path.isfile(tool):
        tool = shutil.which("convert_imageset")
    if not tool:
        pytest.skip("convert_imageset binary not installed")
    src = tmp_path / "src"
    src.mkdir()
    names = ["a.png", "b.png", "c.png"]
    for i, n in enumerate(names):
        cv2.imwrite(str(src / n), photo(100 + 30 * i, 150, 40 + i))
    lst = tmp_path / "list.txt"
    lst.write_text("".join("%s %d\n" % (n, i + 3) for i, n in enumerate(names)))
    ref = str(tmp_path / "ref")
    subprocess.run([tool, "--resize_height=256", "--resize_width=256", str(src) + "/", str(lst), ref],
                   check=True, capture_output=True)
    out = str(tmp_path / "ours")
    assert make_lmdb.main([str(lst), out, "--root", str(src), "--no-progress"]) == 0
    assert read_db(out) == read_db(ref)


@pytest.mark.parametrize("label", [0, 7, 300, 2 ** 31 - 1, -1])
def test_hand_serialised_datum_equals_protobuf(label):
    img = photo(5, 7, label % 13)
    for encoded in (False, True):
        got = lmdb_build.make_datum_bytes(img, label, encoded=encoded, fmt="png")
        if encoded:
            d = lmdb_io.image_to_datum(img, label, encoded_bytes=lmdb_build.encode_image(img, "png"))
        else:
            d = lmdb_io.image_to_datum(img, label)
            d.encoded = False
        assert got == d.SerializeToString()
        back, lab = lmdb_io.datum_to_image(got)
        assert lab == label and np.array_equal(back, img)


def test_datum_header_reads_what_protobuf_wrote():
    """lmdb_io.datum_header (tools/lmdb_info's reader) against Datums that protobuf serialised:
    raw, encoded, negative label, packed and unpacked float_data; bytes that are no Datum raise."""
    from caffe.proto import caffe_pb2
    img = photo(5, 7, 3)
    raw = lmdb_io.image_to_datum(img, -2).SerializeToString()
    h = lmdb_io.datum_header(raw)
    assert (h["channels"], h["height"], h["width"], h["label"], h["encoded"]) == (3, 5, 7, -2, False)
    assert raw[h["data_off"]:h["data_off"] + h["data_len"]] == img.transpose(2, 0, 1).tobytes()
    png = lmdb_build.encode_image(img, "png")
    h = lmdb_io.datum_header(lmdb_io.image_to_datum(img, 9, encoded_bytes=png).SerializeToString())
    assert h["encoded"] and h["label"] == 9 and h["data_len"] == len(png) and h["float_count"] == 0
    d = caffe_pb2.Datum(channels=1, height=2, width=3, float_data=[0.5] * 6)
    assert lmdb_io.datum_header(d.SerializeToString())["float_count"] == 6   # one field per float
    packed = b"\x32\x10" + np.full(4, 0.5, np.float32).tobytes()             # field 6, wire type 2, 16 bytes
    assert lmdb_io.datum_header(b"\x08\x01" + packed)["float_count"] == 4
    for bad in (raw[:-3], b"\x0b\x00", b"\x00\x01", b"\xff" * 12):
        with pytest.raises(ValueError, match="not a Datum"):
            lmdb_io.datum_header(bad)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGBUS])
def test_dead_worker_aborts_build(tmp_path, sig):
    """A worker killed mid-build (OOM killer, decoder crash, SIGBUS) ends the build with an error naming
    the worker, its signal and the image it was on, not a hang."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(120):
        cv2.imwrite(str(src / ("%03d.png" % i)), photo(32, 32, i))
    out = str(tmp_path / "db")
    proc = subprocess.Popen([sys.executable, TOOL, str(src), out, "--workers", "2", "--delay", "0.05",
                             "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    kids = []
    while time.time() < deadline and not os.path.isdir("%s.partial-%d" % (out, proc.pid)):
        time.sleep(0.05)
    while time.time() < deadline and len(kids) < 2:
        kids = [k for k in _children(proc.pid) if "multiprocessing" in open("/proc/%d/cmdline" % k).read()
                and "resource_tracker" not in open("/proc/%d/cmdline" % k).read()]
        time.sleep(0.1)
    time.sleep(0.5)
    os.kill(kids[0], sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "worker process died" in err
    partial = "%s.partial-%d" % (out, proc.pid)
    assert not os.path.exists(out) and not os.path.exists(partial)
    assert "(pid %d) was killed by %s" % (kids[0], signal.Signals(sig).name) in err, err
    m = re.search(r"while (decoding image (\d+) '(\d{3}\.png)'|between images)", err)
    assert m, err
    if m.group(2):  # the image named is a real one, with its index
        assert int(m.group(2)) == int(m.group(3)[:3]) and (src / m.group(3)).is_file()
    assert "removed the partial database %s" % partial in err and "Traceback" not in err


def test_caffe_data_layer_reads_the_database(tmp_path):
    """Caffe's own LMDB reader (Data layer) accepts the trimmed writemap database, raw and encoded."""
    import caffe
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        cv2.imwrite(str(src / ("%d.png" % i)), photo(50 + 20 * i, 70, 50 + i))
    lst = tmp_path / "list.txt"
    lst.write_text("0.png 4\n1.png 5\n2.png 6\n")
    for extra in ([], ["--encoded", "--encode-format", "png"]):
        out = str(tmp_path / ("db%d" % len(extra)))
        assert make_lmdb.main([str(lst), out, "--root", str(src), "--size", "64", "--no-progress"] + extra) == 0
        proto = tmp_path / "net.prototxt"
        proto.write_text('layer { name: "d" type: "Data" top: "data" top: "label" '
                         'data_param { source: "%s" backend: LMDB batch_size: 3 } }\n' % out)
        caffe.set_mode_cpu()
        net = caffe.Net(str(proto), caffe.TEST)
        net.forward()
        assert list(net.blobs["label"].data) == [4, 5, 6]
        for i in range(3):
            ref = cv2.resize(cv2.imread(str(src / ("%d.png" % i))), (64, 64), interpolation=cv2.INTER_LINEAR)
            assert np.array_equal(net.blobs["data"].data[i], ref.transpose(2, 0, 1).astype(np.float32))


@pytest.mark.parametrize("shape,contiguous", [((256, 256, 3), True), ((17, 31, 3), True), ((17, 31, 3), False)])
def test_planar_into_writes_the_datum_layout(shape, contiguous):
    """make_lmdb's HWC -> CHW copy (cv2.split into the destination planes) equals the transpose."""
    from ltc import lmdb_io
    img = np.random.default_rng(3).integers(0, 256, shape, dtype=np.uint8)
    if not contiguous:
        img = img[:, ::-1]
    out = np.zeros((3,) + shape[:2], np.uint8)
    assert lmdb_io.planar_into(img, out) is out
    assert np.array_equal(out, img.transpose(2, 0, 1))
