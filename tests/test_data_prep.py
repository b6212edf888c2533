"""data_prep/ scripts and tools/lmdb_info.py on small synthetic inputs."""
import gzip
import json
import os
import struct

import cv2
import lmdb
import numpy as np
import pytest

from conftest import load_script
from ltc import lmdb_io

coco = load_script("data_prep/coco.py")
embedded = load_script("data_prep/embedded.py")
fashion_scenes = load_script("data_prep/fashion_scenes.py")
imagenet = load_script("data_prep/imagenet.py")
lmdb_info = load_script("tools/lmdb_info.py")


def db_items(path):
    env = lmdb.open(path, readonly=True, lock=False)
    with env.begin() as txn:
        out = [(k.decode(), lmdb_io.datum_to_image(v)) for k, v in txn.cursor()]
    env.close()
    return out


def boxes_disjoint(boxes, gap):
    for i, (x, y, s) in enumerate(boxes):
        for bx, by, bs in boxes[i + 1:]:
            if not (x + s + gap <= bx or bx + bs + gap <= x or y + s + gap <= by or by + bs + gap <= y):
                return False
    return True


@pytest.mark.parametrize("k", [0, 1, 5, 16])
def test_compose_scene_places_exactly_k_disjoint_items(k):
    rng = np.random.RandomState(k)
    items = [np.full((28, 28), 255, np.uint8) for _ in range(k)]  # solid squares: one blob each
    for _ in range(5):
        img, boxes = fashion_scenes.compose_scene(items, rng, canvas=256, min_item=24, max_item=48, margin=14, gap=2)
        assert img.shape == (256, 256, 3) and img.dtype == np.uint8
        assert len(boxes) == k and boxes_disjoint(boxes, 2)
        for x, y, s in boxes:
            assert 24 <= s <= 48 and 14 <= x and x + s <= 242 and 14 <= y and y + s <= 242
        mask = (img.max(axis=2) > 0).astype(np.uint8)
        n, _ = cv2.connectedComponents(mask, connectivity=8)
        assert n - 1 == k  # label 0 is the background
        inside = np.zeros_like(mask)
        for x, y, s in boxes:
            inside[y:y + s, x:x + s] = 1
        assert not (mask & (1 - inside)).any()


def test_place_boxes_reports_impossible():
    rng = np.random.RandomState(0)
    assert fashion_scenes.place_boxes([120] * 4, rng, canvas=256, margin=14, gap=2, tries=50) is None
    assert fashion_scenes.place_boxes([300], rng, canvas=256) is None
    with pytest.raises(fashion_scenes.FashionError):
        fashion_scenes.compose_scene([np.ones((28, 28), np.uint8)] * 4, rng, min_item=120, max_item=120, redraws=3)


def write_idx(path, arr):
    arr = np.asarray(arr, np.uint8)
    header = struct.pack(">HBB", 0, 8, arr.ndim) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.tobytes())


def fake_fashion(d, n_train=40, n_test=20):
    os.makedirs(d, exist_ok=True)
    rng = np.random.RandomState(0)
    for pre, n in (("train", n_train), ("t10k", n_test)):
        imgs = np.zeros((n, 28, 28), np.uint8)
        imgs[:, 4:24, 6:22] = rng.randint(80, 256, size=(n, 1, 1))
        write_idx(os.path.join(d, "%s-images-idx3-ubyte.gz" % pre), imgs)
        write_idx(os.path.join(d, "%s-labels-idx1-ubyte.gz" % pre), np.arange(n) % 10)


def test_fashion_scenes_build(tmp_path, capsys):
    fdir = str(tmp_path / "fashion")
    fake_fashion(fdir)
    out = str(tmp_path / "out")
    rc = fashion_scenes.main(["--fashion-dir", fdir, "--out-dir", out, "--train-scenes", "30", "--val-scenes", "12",
                              "--train-items", "15", "--val-items", "7", "--max-count", "6", "--no-progress"])
    assert rc == 0
    scenes = db_items(os.path.join(out, "scenes_train_lmdb"))
    assert len(scenes) == 30
    for key, (img, label) in scenes:
        assert img.shape == (256, 256, 3) and 0 <= label <= 6 and key.endswith("_k%02d" % label)
        n, _ = cv2.connectedComponents((img.max(axis=2) > 0).astype(np.uint8), connectivity=8)
        assert n - 1 == label  # the fake items are solid blocks: one component each
    assert len({lab for _, (_, lab) in scenes}) > 3
    items = db_items(os.path.join(out, "items_val_lmdb"))
    assert len(items) == 7 and len(db_items(os.path.join(out, "items_train_lmdb"))) == 15
    for key, (img, label) in items:
        assert key.endswith("_c%d" % label) and np.array_equal(img[:, :, 0], img[:, :, 2])
        assert img[:16].max() == 0 and img[128, 128].max() > 0  # centred on a black canvas
    # same seed, same scenes
    out2 = str(tmp_path / "out2")
    assert fashion_scenes.main(["--fashion-dir", fdir, "--out-dir", out2, "--what", "scenes", "--train-scenes", "30",
                                "--val-scenes", "12", "--max-count", "6", "--no-progress"]) == 0
    assert [k for k, _ in db_items(os.path.join(out2, "scenes_train_lmdb"))] == [k for k, _ in scenes]
    assert fashion_scenes.main(["--fashion-dir", fdir, "--out-dir", out, "--no-progress"]) == 2  # exists
    assert "already exists" in capsys.readouterr().err


def test_fashion_missing_dataset_says_how_to_install(tmp_path, capsys):
    rc = fashion_scenes.main(["--fashion-dir", str(tmp_path / "nowhere"), "--out-dir", str(tmp_path / "o")])
    assert rc == 2
    assert "apt-get install -y dataset-fashion-mnist" in capsys.readouterr().err
    bad = tmp_path / "bad.gz"
    with gzip.open(str(bad), "wb") as f:
        f.write(b"\x00\x00\x08\x03" + struct.pack(">III", 5, 28, 28) + b"\0" * 100)
    with pytest.raises(fashion_scenes.FashionError, match="holds 100 bytes"):
        fashion_scenes.read_idx(str(bad))


def test_embedded_split_is_deterministic():
    names = [("n%02d" % i, "/x/%d" % i) for i in range(30)]
    train, val = embedded.split_photos(names)
    assert len(train) == 24 and len(val) == 6
    assert [n for n, _ in val] == ["n04", "n09", "n14", "n19", "n24", "n29"]
    assert not set(train) & set(val)


def test_embedded_build_and_lmdb_info(tmp_path, capsys):
    out = str(tmp_path / "sample")
    rc = embedded.main(["--out", out, "--no-install", "--workers", "0"])
    err = capsys.readouterr().err
    if embedded._package_dir("foolbox") is None:
        assert rc == 1 and "pip install --no-deps foolbox==3.3.4" in err
        pytest.skip("foolbox's photos not installed; the failure message was checked")
    assert rc == 0, err
    assert sorted(os.listdir(os.path.join(out, "images", "train"))).__len__() == 24
    assert len(os.listdir(os.path.join(out, "images", "val"))) == 6
    train = db_items(os.path.join(out, "train_lmdb"))
    assert len(train) == 24 and all(img.shape == (256, 256, 3) for _, (img, _) in train)
    assert "00000000_foolbox_imagenet_00_243.jpg" == train[0][0]
    sheet = str(tmp_path / "sheet.png")
    assert lmdb_info.main([os.path.join(out, "val_lmdb"), "--json", "--sheet", sheet, "--n", "4", "--tile", "64"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["entries"] == 6 and info["shapes"] == {"3x256x256": 6} and info["labels"] == {"0": 6}
    assert cv2.imread(sheet).shape == (2 * 66 + 2, 2 * 66 + 2, 3)


def _jpeg(path, seed):
    rng = np.random.RandomState(seed)
    img = cv2.resize((rng.rand(6, 8, 3) * 255).astype(np.uint8), (80, 60), interpolation=cv2.INTER_CUBIC)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    cv2.imwrite(path, img)


def fake_imagenet(root):
    wnids = ["n01440764", "n01443537", "n02102040"]  # sorted
    for i, w in enumerate(wnids):
        for j in range(2):
            _jpeg(os.path.join(root, "train", w, "%s_%d.JPEG" % (w, j)), 10 * i + j)
    val_labels = [2, 0, 1, 2]
    for j in range(4):
        _jpeg(os.path.join(root, "val", "ILSVRC2012_val_%08d.JPEG" % (j + 1)), 100 + j)
    return wnids, val_labels


def test_imagenet_val_list_and_devkit(tmp_path, capsys):
    root = str(tmp_path / "ilsvrc")
    wnids, val_labels = fake_imagenet(root)
    vlist = tmp_path / "val.txt"
    vlist.write_text("".join("ILSVRC2012_val_%08d.JPEG %d\n" % (j + 1, l) for j, l in enumerate(val_labels)))
    out = str(tmp_path / "a")
    assert imagenet.main(["--root", root, "--out-dir", out, "--val-list", str(vlist), "--workers", "0",
                          "--no-progress"]) == 0
    assert open(os.path.join(out, "synsets.txt")).read().split() == wnids
    train = db_items(os.path.join(out, "train_lmdb"))
    assert len(train) == 6
    for key, (_, label) in train:
        assert key.split("_", 1)[1].split("/")[0] == wnids[label]
    val = db_items(os.path.join(out, "val_lmdb"))
    assert [lab for _, (_, lab) in val] == val_labels
    # devkit: ILSVRC2012_IDs are in another order than the sorted WNIDs
    import scipy.io
    ids = {wnids[0]: 3, wnids[1]: 1, wnids[2]: 2}
    syn = np.zeros(3, dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O")])
    for i, w in enumerate(wnids):
        syn[i] = (ids[w], w)
    scipy.io.savemat(str(tmp_path / "meta.mat"), {"synsets": syn})
    gt = tmp_path / "gt.txt"
    gt.write_text("".join("%d\n" % ids[wnids[l]] for l in val_labels))
    out2 = str(tmp_path / "b")
    assert imagenet.main(["--root", root, "--out-dir", out2, "--split", "val", "--val-gt", str(gt),
                          "--meta", str(tmp_path / "meta.mat"), "--workers", "0", "--no-progress"]) == 0
    assert [lab for _, (_, lab) in db_items(os.path.join(out2, "val_lmdb"))] == val_labels
    capsys.readouterr()
    sheet = str(tmp_path / "sheet.png")
    assert lmdb_info.main([os.path.join(out, "train_lmdb"), "--json", "--sheet", sheet, "--n", "5", "--tile", "32"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["entries"] == 6 and info["labels"] == {"0": 2, "1": 2, "2": 2}
    assert info["shapes"] == {"3x256x256": 6} and info["storage"] == {"raw uint8": 6}
    assert cv2.imread(sheet).shape == (2 * 34 + 2, 3 * 34 + 2, 3)  # 5 tiles: 3 columns, 2 rows
    assert imagenet.main(["--root", root, "--out-dir", str(tmp_path / "c"), "--split", "val"]) == 2
    assert "val labels unknown" in capsys.readouterr().err


def test_coco_folders(tmp_path):
    root = str(tmp_path / "coco")
    for split, n in (("train2017", 3), ("val2017", 2)):
        for j in range(n):
            _jpeg(os.path.join(root, split, "%012d.jpg" % j), j)
    open(os.path.join(root, "val2017", "000000000009.jpg"), "wb").close()  # an empty file is skipped
    out = str(tmp_path / "out")
    assert coco.main(["--root", root, "--year", "2017", "--out-dir", out, "--workers", "0", "--no-progress"]) == 0
    assert len(db_items(os.path.join(out, "train_lmdb"))) == 3
    assert len(db_items(os.path.join(out, "val_lmdb"))) == 2
    assert "empty file" in open(os.path.join(out, "val_lmdb.skipped.tsv")).read()
    assert coco.main(["--root", root, "--out-dir", str(tmp_path / "o2"), "--no-progress"]) == 2  # no *2014 folders
