"""The embedded photos: the real photos that ship inside installed Python packages (the list, where
they are, and data/photos' split). build_photo_lmdbs builds their LMDBs (the command is
data_prep/embedded.py); data_prep/photos.py adds them to every other packaged photo (ltc/photos.py)."""
import importlib.util
import os
import subprocess
import sys

from ltc import lmdb_build


SKIMAGE_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
                  "motorcycle_right.png", "hubble_deep_field.jpg")
SKIMAGE_MORE_PHOTOS = ("brick.png", "camera.png", "cell.png", "clock_motion.png", "coins.png", "grass.png",
                       "gravel.png", "ihc.png", "moon.png", "page.png", "retina.jpg", "text.png")
PHOTO_SETS = ("sample", "all")
SKLEARN_PHOTOS = ("china.jpg", "flower.jpg")
FOOLBOX_SPEC = "foolbox==3.3.4"
VAL_EVERY = 5


def _package_dir(name):
    """A package's folder, found without importing it (None if not installed)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return list(spec.submodule_search_locations)[0]


def foolbox_photos(install=True):
    d = _package_dir("foolbox")
    if d is None or not os.path.isdir(os.path.join(d, "data")):
        if not install:
            raise lmdb_build.BuildError("foolbox's photos are absent; install them with "
                                        "'%s -m pip install --no-deps %s'" % (sys.executable, FOOLBOX_SPEC))
        cmd = [sys.executable, "-m", "pip", "install", "--no-deps", FOOLBOX_SPEC]
        print("foolbox's photos are absent; running: %s" % " ".join(cmd))
        subprocess.run(cmd, check=True)
        importlib.invalidate_caches()
        d = _package_dir("foolbox")
        if d is None:
            raise lmdb_build.BuildError("pip reported success but foolbox is still not importable")
    data = os.path.join(d, "data")
    names = sorted(n for n in os.listdir(data) if n.startswith("imagenet_") and n.endswith(".jpg"))
    return [os.path.join(data, n) for n in names]


def collect_photos(install=True, photo_set="sample"):
    """[(file name in the sample set, source path)] of the embedded photos of ``photo_set``
    ("sample": 30, "all": 42), sorted by name."""
    import matplotlib
    found = []
    sk = _package_dir("skimage")
    names = SKIMAGE_PHOTOS + (SKIMAGE_MORE_PHOTOS if photo_set == "all" else ())
    found += [("skimage_" + n, os.path.join(sk, "data", n)) for n in names]
    sl = _package_dir("sklearn")
    found += [("sklearn_" + n, os.path.join(sl, "datasets", "images", n)) for n in SKLEARN_PHOTOS]
    found.append(("matplotlib_grace_hopper.jpg", os.path.join(matplotlib.get_data_path(), "sample_data",
                                                              "grace_hopper.jpg")))
    found += [("foolbox_" + os.path.basename(p), p) for p in foolbox_photos(install)]
    missing = [p for _, p in found if not os.path.isfile(p)]
    if missing:
        raise lmdb_build.BuildError("embedded photos missing: %s" % ", ".join(missing))
    return sorted(found)


def split_photos(photos, val_every=VAL_EVERY):
    """Every val_every-th photo (positions val_every-1, 2*val_every-1, ...) to val."""
    train = [p for i, p in enumerate(photos) if i % val_every != val_every - 1]
    val = [p for i, p in enumerate(photos) if i % val_every == val_every - 1]
    return train, val


def build_photo_lmdbs(photo_set="sample", out=None, size=256, resize="warp", val_every=VAL_EVERY, workers=None,
                      no_install=False, overwrite=False):
    """Copy the embedded photos into ``out``/images/{train,val}/ and build ``out``/{train,val}_lmdb
    (data_prep/embedded.py, whose options these are; ``out`` None: data/sample, or data/photos for
    photo_set "all"; ``workers`` None: min(CPUs, the project's maximum)). Raises lmdb_build.BuildError
    (subprocess.CalledProcessError when foolbox's install fails)."""
    import shutil
    from ltc import REPO, cli_checks
    if out is None:
        out = os.path.join(REPO, "data", "sample" if photo_set == "sample" else "photos")
    if workers is None:
        workers = min(os.cpu_count() or 1, cli_checks.MAX_WORKERS)
    outs = {s: os.path.join(out, "%s_lmdb" % s) for s in ("train", "val")}
    lmdb_build.check_outputs(outs.values(), overwrite)
    photos = collect_photos(install=not no_install, photo_set=photo_set)
    ours = {name for name, _ in photos}
    for split in ("train", "val"):  # overwrite replaces only the photos this function copies there
        folder = os.path.join(out, "images", split)
        if os.path.lexists(folder):
            if not os.path.isdir(folder) or os.path.islink(folder):
                raise lmdb_build.BuildError("'%s' is not a folder; choose another --out" % folder)
            foreign = sorted(set(os.listdir(folder)) - ours)
            if foreign:
                raise lmdb_build.BuildError("'%s' holds files this script did not write (%s); not replacing "
                                            "it -- choose another --out" % (folder, ", ".join(foreign[:3])))
    train, val = split_photos(photos, val_every)
    print("found %d embedded photos: %d train, %d val" % (len(photos), len(train), len(val)))
    for split, items in (("train", train), ("val", val)):
        folder = os.path.join(out, "images", split)
        if os.path.isdir(folder):
            shutil.rmtree(folder)
        os.makedirs(folder)
        for name, src in items:
            shutil.copyfile(src, os.path.join(folder, name))
        print("%s: copied %d photos to %s: %s" % (split, len(items), folder, " ".join(n for n, _ in items)))
        s = lmdb_build.build_lmdb(lmdb_build.collect_folder(folder), outs[split], size=size, resize=resize,
                                  workers=workers, overwrite=overwrite, progress=False)
        print(lmdb_build.format_summary(s))
        if s["skipped"]:
            raise lmdb_build.BuildError("%d embedded photos were skipped (see %s)" % (s["skipped"], s["skipped_report"]))
