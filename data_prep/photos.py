#!/usr/bin/env python
"""Every real photograph that installable packages ship, as a manifest and as multi-scale crop views.

Sources, the photo-or-art rule, de-duplication and the held-out split: ltc/photos.py (its
docstring states each rule). No download at run time: the Debian packages are installed with
``--install`` (apt-get install -y --no-install-recommends, as root), otherwise a missing one is
named and the command stops (exit 2); the 42 Python-package photos are those of
data_prep/embedded.py ``--set all``.

Writes
  data_prep/photos_manifest.csv  one row per image file or video frame looked at: package,
                 version, path, frame, licence (from /usr/share/doc/<package>/copyright), sha256,
                 perceptual hash, size, the automatic check's statistics, the curated decision,
                 duplicate_of, group, split, kept. Small, committed; the images are not.
  OUT/train_views_lmdb  --views distinct 256x256 views of the kept train photos: a group drawn
                 uniformly (a calibration series or a video weighs as much as one photo), a photo of
                 it, a square crop whose side is log-uniform between 256 px and the photo's shorter side, downsampled
                 with INTER_AREA (never upsampled), label 0; keys ``%08d_<photo id>_x<x>_y<y>_s<side>``
                 in a seeded shuffled order
  OUT/val_views_lmdb    --val-views views of the held-out photos, drawn the same way
  OUT/views.csv  every view's key, photo id, split and crop box
OUT defaults to data/photos_all.

Examples:
  python data_prep/photos.py --install --manifest-only      # install the packages, write the manifest
  python data_prep/photos.py --views 20000 --val-views 1000  # manifest + both LMDBs
"""
import argparse
import csv
import hashlib
import os
import subprocess
import sys
import time

import numpy as np

from ltc import REPO, embedded_photos, lmdb_build, lmdb_io
from ltc import photos as ph

MANIFEST = os.path.join(REPO, "data_prep", "photos_manifest.csv")
FIELDS = ("id", "package", "version", "path", "frame", "licence", "sha256", "phash", "width", "height",
          "entropy", "top16", "auto_photo", "curated", "reason", "duplicate_of", "group", "split", "kept")


def missing_packages():
    return [p for p in ph.PACKAGES if ph.package_files(p) is None]


def install(pkgs):
    cmd = ["apt-get", "install", "-y", "--no-install-recommends"] + list(pkgs)
    print("installing: " + " ".join(cmd), flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if subprocess.run(cmd, env=env).returncode:
        print("apt-get install failed; running apt-get update once and retrying", flush=True)
        subprocess.run(["apt-get", "update"], env=env, check=True)
        subprocess.run(cmd, env=env, check=True)


def embedded_rows(install_pip):
    """Rows of the 42 photos of data_prep/embedded.py --set all, with its split (every 5th by name)."""
    from importlib import metadata
    photos = embedded_photos.collect_photos(install=install_pip, photo_set="all")
    train, val = embedded_photos.split_photos(photos)
    split = {n: "train" for n, _ in train}
    split.update({n: "val" for n, _ in val})
    rows = []
    for name, path in photos:
        dist = {"skimage": "scikit-image", "sklearn": "scikit-learn"}.get(name.split("_")[0], name.split("_")[0])
        try:
            md = metadata.metadata(dist)
            classifiers = [c.split("::")[-1].strip() for c in md.get_all("Classifier") or () if c.startswith("License ::")]
            lic = (classifiers[0] if classifiers else md.get("License-Expression") or
                   (md.get("License") or "").split("\n")[0])[:60] or "see the package"
            ver = metadata.version(dist)
        except metadata.PackageNotFoundError:
            lic, ver = "unknown", ""
        top = name.split("_")[0]            # the module: skimage, sklearn, matplotlib, foolbox
        rel = path[path.rindex("/" + top + "/") + 1:]
        rows.append(dict(package="python:" + dist, version=ver, path=rel, member="", group="embedded-" + name,
                         curated="photo", reason="", licence=lic + " (package licence)", fixed_split=split[name],
                         id="py-" + os.path.splitext(name)[0].replace("_", "-")))
    return rows


def build_manifest(args):
    rows = []
    for pkg in ph.PACKAGES:
        files = ph.package_files(pkg)
        ver = ph.package_version(pkg)
        got = ph.candidates(pkg, files, frames=args.frames)
        for r in got:
            r["version"] = ver
        rows += got
    rows = [r for r in rows if not r.get("skip")]
    rows += embedded_rows(not args.no_install)
    t0 = time.time()
    for r in rows:
        r.setdefault("licence", ph.package_licence(r["package"], r["path"]))
        try:
            if r["member"] != "":
                img = ph.load_source(r)
                r["sha256"] = hashlib.sha256(img.tobytes()).hexdigest()
            else:
                with open(ph.resolve_source(r["path"]), "rb") as f:
                    data = f.read()
                r["sha256"] = hashlib.sha256(data).hexdigest()
                img = ph.load_source(r)
        except ph.PhotoError as e:
            r.update(reason=str(e), width=0, height=0, phash=0, entropy=0.0, top16=1.0, auto_photo=False)
            r["candidate"] = False
            continue
        r["height"], r["width"] = img.shape[:2]
        r["phash"] = ph.phash(img)
        r["entropy"], r["top16"] = ph.auto_stats(img)
        r["auto_photo"] = ph.looks_like_photo(r["entropy"], r["top16"])
        r["candidate"] = r["curated"] == "photo" and r["auto_photo"]
        if r["curated"] == "photo" and not r["auto_photo"]:
            r["reason"] = "on the allow list but the automatic check says not a photo"
    print("read %d files/frames in %.0f s" % (len(rows), time.time() - t0), flush=True)
    ids = {}
    for r in rows:
        if "id" not in r:
            r["id"] = ph.stem_id(r["package"], r["path"], r["member"])
        base, k = r["id"], 2
        while r["id"] in ids:
            r["id"] = "%s-%d" % (base, k)
            k += 1
        ids[r["id"]] = r
    ph.dedupe(rows, args.phash_dist)
    fixed = {r["group"]: r["fixed_split"] for r in rows if "fixed_split" in r}
    for r in rows:
        r["kept"] = bool(r.get("candidate")) and not r.get("duplicate_of")
        if not r.get("group"):
            r["group"] = r["id"]
        r["split"] = ph.split_of(r["group"], args.split_seed, args.val_fraction, fixed) if r["kept"] else ""
    return rows


def write_manifest(rows, path):
    tmp = path + ".partial"
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(FIELDS)
        for r in sorted(rows, key=lambda r: (r["package"], r["path"], int(r["member"] or -1))):
            w.writerow([r["id"], r["package"], r.get("version", ""), r["path"], r["member"], r["licence"],
                        r.get("sha256", ""), "%016x" % r.get("phash", 0), r.get("width", 0), r.get("height", 0),
                        "%.3f" % r.get("entropy", 0.0), "%.3f" % r.get("top16", 1.0), int(bool(r.get("auto_photo"))),
                        r["curated"], r.get("reason", ""), r.get("duplicate_of", ""), r["group"], r["split"],
                        int(r["kept"])])
    os.replace(tmp, path)


def read_manifest(path):
    if not os.path.isfile(path):
        raise ph.PhotoError("manifest '%s' does not exist; run data_prep/photos.py without --views first" % path)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or set(FIELDS) - set(rows[0]):
        raise ph.PhotoError("manifest '%s' lacks the columns %s" % (path, sorted(set(FIELDS) - set(rows[0] if rows else ()))))
    for r in rows:
        r["member"] = r["frame"]
    return rows


def summary(rows):
    kept = [r for r in rows if str(r["kept"]) in ("1", "True")]
    groups = {s: sorted({r["group"] for r in kept if r["split"] == s}) for s in ("train", "val")}
    big = [r for r in kept if min(int(r["width"]), int(r["height"])) >= ph.VIEW_SIZE]
    lines = ["manifest: %d rows, %d kept photos (%d train / %d val) in %d groups (%d train / %d val); "
             "%d kept photos have a shorter side >= %d px (the view sources: %d train / %d val)"
             % (len(rows), len(kept), sum(r["split"] == "train" for r in kept), sum(r["split"] == "val" for r in kept),
                len(groups["train"]) + len(groups["val"]), len(groups["train"]), len(groups["val"]), len(big),
                ph.VIEW_SIZE, sum(r["split"] == "train" for r in big), sum(r["split"] == "val" for r in big))]
    by_pkg = {}
    for r in rows:
        d = by_pkg.setdefault(r["package"], [0, 0, 0, 0])
        d[0] += 1
        d[1] += str(r["kept"]) in ("1", "True")
        d[2] += bool(r.get("duplicate_of"))
        d[3] += r["curated"] == "photo" and str(r["auto_photo"]) in ("0", "False")
    for pkg, (n, k, dup, auto) in sorted(by_pkg.items()):
        lines.append("  %-30s %4d looked at, %4d kept, %3d duplicates, %2d listed but failed the automatic check"
                     % (pkg, n, k, dup, auto))
    disagree = [r for r in rows if r["curated"] != "photo" and str(r["auto_photo"]) in ("1", "True")]
    if disagree:
        lines.append("  auto check says photo, not on the allow list (%d): %s" % (
            len(disagree), ", ".join(os.path.basename(r["path"]) for r in disagree[:40])))
    failed = [r for r in rows if r["curated"] == "photo" and str(r["auto_photo"]) in ("0", "False")]
    if failed:
        lines.append("  allow-listed but dropped by the automatic check (%d): %s" % (
            len(failed), ", ".join(os.path.basename(r["path"]) for r in failed)))
    return "\n".join(lines)


def view_datums(rows, boxes, order, size, who):
    """(key, datum) of every box, decoding each photo once; keys carry the shuffled index."""
    by_photo = {}
    for j, (i, x, y, s) in enumerate(boxes):
        by_photo.setdefault(i, []).append((j, x, y, s))
    for i in sorted(by_photo):
        r = rows[i]
        img = ph.load_source(r)
        if img.shape[1] != int(r["width"]) or img.shape[0] != int(r["height"]):
            raise ph.PhotoError("%s: now %dx%d, the manifest says %sx%s (the package changed? rerun without "
                                "--views to refresh the manifest)" % (r["path"], img.shape[1], img.shape[0],
                                                                     r["width"], r["height"]))
        for j, x, y, s in by_photo[i]:
            view = ph.cut_view(img, x, y, s, size)
            key = "%08d_%s_x%d_y%d_s%d" % (order[j], r["id"], x, y, s)
            yield key, lmdb_io.image_datum_bytes(view, 0)


def build_views(rows, split, n, out_lmdb, seed, size, overwrite, progress, views_csv):
    src = [r for r in rows if str(r["kept"]) in ("1", "True") and r["split"] == split]
    rng = np.random.RandomState([seed, 1 if split == "train" else 2])
    boxes = ph.sample_views([(int(r["width"]), int(r["height"])) for r in src], n, rng, size,
                            groups=[r["group"] for r in src])
    order = rng.permutation(n)
    t = time.time()
    written = lmdb_build.write_datums(out_lmdb, view_datums(src, boxes, order, size, split), total=n,
                                      overwrite=overwrite, progress=progress, desc=os.path.basename(out_lmdb))
    used = len({b[0] for b in boxes})
    print("%s: wrote %d distinct views of %d photos to %s in %.0f s" % (split, written, used, out_lmdb, time.time() - t))
    for j, (i, x, y, s) in enumerate(boxes):
        views_csv.writerow(["%08d_%s_x%d_y%d_s%d" % (order[j], src[i]["id"], x, y, s), src[i]["id"], split, x, y, s])
    return written


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--install", action="store_true", help="apt-get install the missing Debian packages (as root)")
    p.add_argument("--no-install", action="store_true", help="do not pip-install foolbox's photos (embedded.py)")
    p.add_argument("--manifest", default=MANIFEST, help="the manifest CSV")
    p.add_argument("--manifest-only", action="store_true", help="write the manifest, no LMDBs")
    p.add_argument("--reuse-manifest", action="store_true",
                   help="build the views from the existing manifest (its sizes are checked against the files)")
    p.add_argument("--out", default=os.path.join(REPO, "data", "photos_all"), help="folder of the LMDBs")
    p.add_argument("--views", type=int, default=20000, help="train views")
    p.add_argument("--val-views", type=int, default=1000, help="views of the held-out photos")
    p.add_argument("--size", type=int, default=ph.VIEW_SIZE, help="view side (px)")
    p.add_argument("--frames", type=int, default=ph.SEQUENCE_FRAMES, help="frames taken per video or sequence")
    p.add_argument("--phash-dist", type=int, default=ph.PHASH_MAX_DIST, help="near-duplicate threshold (bits of 64)")
    p.add_argument("--val-fraction", type=float, default=ph.VAL_FRACTION, help="share of groups held out")
    p.add_argument("--split-seed", type=int, default=ph.SPLIT_SEED, help="seed of the held-out rule")
    p.add_argument("--seed", type=int, default=1701, help="seed of the crop boxes")
    p.add_argument("--overwrite", action="store_true", help="replace existing LMDBs")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    print("photos: " + " ".join("%s=%s" % kv for kv in sorted(vars(args).items())))
    if args.views < 0 or args.val_views < 0 or args.size < 1 or not 0 <= args.val_fraction < 1:
        print("error: need --views, --val-views >= 0, --size >= 1 and 0 <= --val-fraction < 1", file=sys.stderr)
        return 2

    def work():
        outs = {"train": os.path.join(args.out, "train_views_lmdb"), "val": os.path.join(args.out, "val_views_lmdb")}
        if not args.manifest_only:
            for o in outs.values():
                if os.path.exists(o) and not args.overwrite:
                    raise lmdb_build.BuildError("'%s' already exists; pass --overwrite to rebuild it" % o)
        if args.reuse_manifest:
            rows = read_manifest(args.manifest)
        else:
            miss = missing_packages()
            if miss and args.install:
                install(miss)
                miss = missing_packages()
            if miss:
                raise lmdb_build.BuildError("Debian package(s) not installed: %s; install them with 'apt-get install -y "
                                            "--no-install-recommends %s' or pass --install"
                                            % (", ".join(miss), " ".join(miss)))
            rows = build_manifest(args)
            write_manifest(rows, args.manifest)
            print("wrote %s" % args.manifest)
            rows = read_manifest(args.manifest)
        print(summary(rows))
        if args.manifest_only:
            return
        train_groups = {r["group"] for r in rows if r["split"] == "train"}
        shared = train_groups & {r["group"] for r in rows if r["split"] == "val"}
        if shared:
            raise ph.PhotoError("groups in both splits: %s" % ", ".join(sorted(shared)))
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "views.csv"), "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["key", "photo", "split", "x", "y", "side"])
            for split, n in (("train", args.views), ("val", args.val_views)):
                if n:
                    build_views(rows, split, n, outs[split], args.seed, args.size, args.overwrite,
                                not args.no_progress, w)

    return lmdb_build.run_cli("photos", work, input_errors=(ph.PhotoError,))


if __name__ == "__main__":
    sys.exit(main())
