"""Data options no test turned on (issue 32, tests/option_coverage.py), checked by what they change
in the images: data_prep/fashion_scenes.py's scene geometry, --gray, --item-size and --seed, and the
VOC data layers' param_str keys mirror, shuffle and fg_fraction in a real caffe.Net."""
import json
import os

import cv2
import numpy as np
import pytest

import caffe

from conftest import load_script
from test_data_prep import db_items, fake_fashion

fashion_scenes = load_script("data_prep/fashion_scenes.py")


# ----------------------------------------------------------------------------- fashion_scenes.py
def components(img):
    """Bounding boxes (x, y, w, h) of the 8-connected non-black blobs of a scene."""
    n, _, stats, _ = cv2.connectedComponentsWithStats((img.max(axis=2) > 0).astype(np.uint8), connectivity=8)
    return [tuple(int(v) for v in stats[i, :4]) for i in range(1, n)]


def test_fashion_scene_options_shape_the_scenes(tmp_path):
    """--canvas 128 --min-item 10 --max-item 14 --margin 5 --gap 6 --gray --item-size 60 --seed 3: scenes are
    128 x 128 and gray, each item's blob fits a 10..14 px box at least 5 px from the border and 6 px from
    the others; items are a 60 px item centred on a 128 canvas; another seed gives other scenes."""
    fdir = str(tmp_path / "fashion")
    fake_fashion(fdir)                 # each item: a solid block, rows 4..23 and columns 6..21 of 28 x 28
    common = ["--fashion-dir", fdir, "--train-scenes", "20", "--val-scenes", "3", "--train-items", "4",
              "--val-items", "3", "--max-count", "5", "--canvas", "128", "--min-item", "10", "--max-item", "14",
              "--margin", "5", "--gap", "6", "--gray", "--item-size", "60", "--no-progress"]
    assert fashion_scenes.main(common + ["--out-dir", str(tmp_path / "a"), "--seed", "3"]) == 0
    scenes = db_items(str(tmp_path / "a" / "scenes_train_lmdb"))
    assert len(scenes) == 20
    for key, (img, k) in scenes:
        assert img.shape == (128, 128, 3)
        assert np.array_equal(img[..., 0], img[..., 1]) and np.array_equal(img[..., 0], img[..., 2])   # --gray
        boxes = components(img)
        assert len(boxes) == k, key
        for x, y, w, h in boxes:
            # an item of side s in [10, 14] holds its block over 20/28 of s rows and 16/28 of s columns
            # (7.1..10 and 5.7..8 px), give or take one pixel of bilinear edge on each side
            assert 6 <= h <= 12 and 4 <= w <= 10, (key, w, h)
            assert x >= 5 and y >= 5 and x + w <= 123 and y + h <= 123, key
        for i, (x, y, w, h) in enumerate(boxes):
            for bx, by, bw, bh in boxes[i + 1:]:
                assert x + w + 6 <= bx or bx + bw + 6 <= x or y + h + 6 <= by or by + bh + 6 <= y, key
    assert max(k for _, (_, k) in scenes) >= 3
    for key, (img, _) in db_items(str(tmp_path / "a" / "items_val_lmdb")):
        ys, xs = np.nonzero(img.max(axis=2))
        assert img.shape == (128, 128, 3) and ys.min() >= 34 and ys.max() < 94 and xs.min() >= 34 and xs.max() < 94
        assert ys.max() - ys.min() + 1 >= 60 * 20 // 28 - 2      # the block of a 60 px item: ~43 rows
    assert fashion_scenes.main(common + ["--out-dir", str(tmp_path / "b"), "--seed", "4", "--what", "scenes"]) == 0
    other = db_items(str(tmp_path / "b" / "scenes_train_lmdb"))
    assert [k for k, _ in other] != [k for k, _ in scenes]


# ----------------------------------------------------------------------------- VOC data layers
@pytest.fixture(scope="module")
def toy_index(tmp_path_factory):
    from ltc import voc, voc_toy
    if not os.path.isfile(os.path.join(voc_toy.FASHION_DIR, "train-images-idx3-ubyte.gz")):
        pytest.skip("Fashion-MNIST (Debian's dataset-fashion-mnist) is not installed")
    d = tmp_path_factory.mktemp("toyvoc")
    voc_toy.write_toy_voc(str(d / "VOC_toy"), 4, 1, 1, seed=5, cfg=dict(min_side=120, max_side=140))
    out = {}
    for kind in ("Main", "Segmentation"):
        c, e = voc.build_index(str(d / "VOC_toy"), "train", kind)
        out[kind] = voc.write_index(str(d / ("%s_train.json" % kind)), c, e)
    return out


def layer_net(tmp_path, name, layer, tops, params):
    path = tmp_path / ("%s.prototxt" % name)
    path.write_text('name: "%s"\nlayer { name: "data" type: "Python" %s python_param { module: "voc_layers" '
                    'layer: "%s" param_str: \'%s\' } }\n'
                    % (name, " ".join('top: "%s"' % t for t in tops), layer, json.dumps(params)))
    return caffe.Net(str(path), caffe.TRAIN)


def test_seg_layer_mirror_and_shuffle_keys(toy_index, tmp_path):
    """VOCSegDataLayer with "mirror": false, "shuffle": false serves the index's images in order, unflipped
    (each batch equals the image file minus the means); the defaults serve another order or flips."""
    from ltc import voc
    from ltc.voc_data import to_blob
    _, entries = voc.read_index(toy_index["Segmentation"])
    assert len(entries) == 4
    want = [(to_blob(voc.load_image(e["image"])), voc.read_label_png(e["label"]).astype(np.float32)) for e in entries]
    fixed = layer_net(tmp_path, "fixed", "VOCSegDataLayer", ["data", "label"],
                      dict(index=toy_index["Segmentation"], mirror=False, shuffle=False, seed=2))
    default = layer_net(tmp_path, "default", "VOCSegDataLayer", ["data", "label"],
                        dict(index=toy_index["Segmentation"], seed=2))
    same = []
    for i in range(2 * len(entries)):            # two passes: the order stays fixed
        fixed.forward()
        # the layer draws a batch in every reshape, and caffe.Net's setup reshapes once: the first
        # forward serves entry 1
        img, lab = want[(i + 1) % len(entries)]
        assert np.array_equal(fixed.blobs["data"].data[0], img) and np.array_equal(fixed.blobs["label"].data[0, 0], lab)
        default.forward()
        d = default.blobs["data"].data[0]
        same.append(d.shape == img.shape and np.array_equal(d, img))
    assert not all(same)


def test_det_layer_fg_fraction_key(toy_index, tmp_path):
    """VOCDetDataLayer "fg_fraction": 0 samples background ROIs only; the default 0.25 samples foreground too
    (label > 0), at most a quarter of "rois_per_image"."""
    fg = {}
    for frac in (0.0, 0.25):
        net = layer_net(tmp_path, "det%g" % (frac * 100), "VOCDetDataLayer",
                        ["data", "rois", "labels", "bbox_targets", "bbox_loss_weights"],
                        dict(index=toy_index["Main"], fg_fraction=frac, rois_per_image=16, scale=128, max_size=200,
                             mirror=False, seed=1))
        counts = []
        for _ in range(4):
            net.forward()
            labels = net.blobs["labels"].data.ravel()
            counts.append(int((labels > 0).sum()))
            assert counts[-1] <= round(frac * 16)
        fg[frac] = counts
    assert fg[0.0] == [0, 0, 0, 0] and sum(fg[0.25]) > 0


# ----------------------------------------------------------------------------- the data_prep LMDB options
@pytest.mark.parametrize("script", ["data_prep/coco.py", "data_prep/imagenet.py"])
def test_coco_resize_encoded_and_seed(tmp_path, script):
    """data_prep/coco.py (and imagenet.py) --resize shorter-crop --encoded --size 40 --seed 5 on 80 x 60 JPEGs:
    each entry is the JPEG (quality 95) of the centre 40 x 40 of the image scaled to 53 x 40 (numpy/OpenCV
    here), and the train order is a shuffle that another seed changes."""
    from caffe.proto import caffe_pb2
    from test_data_prep import _jpeg, fake_imagenet
    tool = load_script(script)
    if script.endswith("coco.py"):
        root = tmp_path / "coco"
        for j in range(6):
            _jpeg(str(root / "train2017" / ("%012d.jpg" % j)), j)
        first = ["--year", "2017"]
        names = ["%012d.jpg" % j for j in range(6)]
        folder = root / "train2017"
    else:
        root = tmp_path / "ilsvrc"
        wnids, _ = fake_imagenet(str(root))
        first = []
        names = sorted("%s/%s_%d.JPEG" % (w, w, j) for w in wnids for j in range(2))
        folder = root / "train"
    orders = {}
    for seed in (5, 6):
        out = tmp_path / ("out%d" % seed)
        assert tool.main(["--root", str(root)] + first + ["--split", "train", "--out-dir", str(out),
                          "--resize", "shorter-crop", "--encoded", "--size", "40", "--seed", str(seed),
                          "--workers", "0", "--no-progress"]) == 0
        import lmdb
        env = lmdb.open(str(out / "train_lmdb"), readonly=True, lock=False)
        with env.begin() as txn:
            entries = [(k.decode(), bytes(v)) for k, v in txn.cursor()]
        env.close()
        orders[seed] = [k.split("_", 1)[1] for k, _ in entries]
        for key, value in entries:
            d = caffe_pb2.Datum()
            d.ParseFromString(value)
            src = cv2.imread(str(folder / key.split("_", 1)[1]))
            assert src.shape == (60, 80, 3)
            want = cv2.resize(src, (53, 40), interpolation=cv2.INTER_LINEAR)[:, 6:46]
            ok, jpg = cv2.imencode(".jpg", want, [cv2.IMWRITE_JPEG_QUALITY, 95])
            assert d.encoded and (d.height, d.width) == (40, 40) and bytes(d.data) == jpg.tobytes(), key
    assert sorted(orders[5]) == sorted(orders[6]) == names
    assert orders[5] != orders[6]


def test_voc_toy_sizes_and_seed(tmp_path):
    """data_prep/voc.py --toy --toy-train 3 --toy-val 2 --toy-test 1 --seed 7: the toy tree's image sets hold
    3 / 2 / 1 images (trainval 5), and another seed draws other images."""
    from ltc import voc, voc_toy
    if not os.path.isfile(os.path.join(voc_toy.FASHION_DIR, "train-images-idx3-ubyte.gz")):
        pytest.skip("Fashion-MNIST (Debian's dataset-fashion-mnist) is not installed")
    cli = load_script("data_prep/voc.py")
    pixels = {}
    for seed in ("7", "8"):
        out = tmp_path / ("voc%s" % seed)
        assert cli.main(["--toy", "--out-dir", str(out), "--toy-train", "3", "--toy-val", "2", "--toy-test", "1",
                         "--seed", seed]) == 0
        root = out / "VOC_toy"
        sets = {s: voc.read_ids(str(root / "ImageSets" / "Main" / (s + ".txt"))) for s in ("train", "val", "test")}
        assert {s: len(v) for s, v in sets.items()} == {"train": 3, "val": 2, "test": 1}
        assert len(voc.read_ids(str(root / "ImageSets" / "Main" / "trainval.txt"))) == 5
        first = sets["train"][0]
        pixels[seed] = voc.load_image(str(root / "JPEGImages" / (first + ".jpg")))
    assert pixels["7"].shape != pixels["8"].shape or not np.array_equal(pixels["7"], pixels["8"])


def test_force_builds_past_the_free_space_estimate(tmp_path, monkeypatch, capsys):
    """With a filesystem that looks full (1 KiB free), data_prep/coco.py refuses before writing anything and
    names --force; with --force it builds the database."""
    from ltc.lmdb_build import writer
    from test_data_prep import _jpeg, db_items
    coco = load_script("data_prep/coco.py")
    root = tmp_path / "coco"
    for j in range(3):
        _jpeg(str(root / "val2017" / ("%012d.jpg" % j)), j)
    monkeypatch.setattr(writer, "free_bytes", lambda path: 1024)
    argv = ["--root", str(root), "--year", "2017", "--split", "val", "--size", "32", "--workers", "0", "--no-progress"]
    assert coco.main(argv + ["--out-dir", str(tmp_path / "a")]) != 0
    assert "--force" in capsys.readouterr().err and not (tmp_path / "a" / "val_lmdb").exists()
    assert coco.main(argv + ["--out-dir", str(tmp_path / "b"), "--force"]) == 0
    assert len(db_items(str(tmp_path / "b" / "val_lmdb"))) == 3
