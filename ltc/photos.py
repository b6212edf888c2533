"""Every real photograph that installable packages ship: the catalogue, the photo/art rule, licences,
de-duplication, the held-out split and the multi-scale crop views (data_prep/photos.py is the command).

Sources (no download at run time; Debian packages are installed with apt-get, the Python ones are
the 42 photos of data_prep/embedded.py ``--set all``):

  opencv-doc                 the photographs among OpenCV's sample images, frames of its street and
                             tree videos (vtest.avi, tree.avi)
  plasma-workspace-wallpapers, mate-backgrounds, lomiri-wallpapers-16.04, lomiri-wallpapers-20.04
                             the wallpapers that are photographs
  visp-images-data           ViSP's still photos and frames of its camera sequences
  gnome-backgrounds, ukui-wallpapers, lomiri-wallpapers, sway-backgrounds
                             looked at, all digital art: every file is a manifest row marked art

Photo or art (a stated, reproducible rule): a file is kept only if (1) it is on the curated allow
list ``ALLOW`` below (every image file of a package that is not on it is a manifest row with the
reason "not on the allow list"), and (2) the automatic check agrees: on a thumbnail (longer side
256 px, INTER_AREA) the gray-level histogram entropy is at least ``MIN_ENTROPY`` bits. Shape
samples, masks, logos and flat-colour art have few gray levels (0-3.7 bits here); photographs have
noise, shading and texture (the lowest kept: 3.79 bits, an ImageNet photo). The check cannot tell a
photograph from a render, a chart or a rich digital painting (those reach 4-7 bits): the list does
that, by eye, one decision per file or wallpaper. The check only removes: a listed file that fails
it is dropped and the report names it; an unlisted file that passes it is listed in the report.
The share of the 16 most frequent colours (5 bits a channel) is recorded too, not used.

Duplicates: the same bytes (sha256 of the file, or of a video frame's pixels) are one photo; so
are two images whose 64-bit DCT perceptual hashes differ in at most ``PHASH_MAX_DIST`` bits
(resolution variants of one wallpaper, one photo saved as .jpg and .png): the one with more
pixels is kept.

Held out: whole groups. A group is a photo alone, or the photos of one scene (a stereo pair, a
calibration series, the frames of one video or camera sequence). The 42 embedded photos keep
their existing split (data_prep/embedded.py: every 5th by name is held out); every other group
goes to val when sha256("<seed>:<group>") read as a fraction of 2**256 is below ``val_fraction``.
Views are cut only from photos whose shorter side is at least the view size (downsampling only).
"""
import fnmatch
import hashlib
import math
import os
import re
import subprocess

import cv2
import numpy as np

VIEW_SIZE = 256
MIN_ENTROPY = 3.75
PHASH_MAX_DIST = 6
VAL_FRACTION = 0.15
SPLIT_SEED = 1701
SEQUENCE_FRAMES = 8          # frames taken from each video or camera sequence, evenly spaced

OPENCV = "/usr/share/doc/opencv-doc/examples"
VISP = "/usr/share/visp-images-data/ViSP-images"
IMAGE_EXT = (".jpg", ".jpeg", ".png", ".webp", ".pgm", ".ppm", ".bmp", ".tif", ".tiff")
VIDEO_EXT = (".avi",)

# package -> [(glob on the installed path, group or None (the photo alone), kind)]
# kind: "still", "video" (frames of one file), "sequence" (the matched files are frames of one scene)
ALLOW = {
    "opencv-doc": [
        (OPENCV + "/alphamat/input_images/plant.jpg", None, "still"),
        (OPENCV + "/data/aero[13].jpg", "opencv-aero", "still"),
        (OPENCV + "/data/aloe[LR].jpg", "opencv-aloe", "still"),
        (OPENCV + "/data/basketball[12].png", "opencv-basketball", "still"),
        (OPENCV + "/data/box.png", "opencv-box", "still"),
        (OPENCV + "/data/box_in_scene.png", "opencv-box", "still"),
        (OPENCV + "/data/graf[13].png", "opencv-graf", "still"),
        (OPENCV + "/data/leuven[AB].jpg", "opencv-leuven", "still"),
        (OPENCV + "/data/rubberwhale[12].png", "opencv-rubberwhale", "still"),
        (OPENCV + "/data/left.jpg", "opencv-books-stereo", "still"),
        (OPENCV + "/data/right.jpg", "opencv-books-stereo", "still"),
        (OPENCV + "/data/left[01][0-9].jpg", "opencv-chessboard-calibration", "still"),
        (OPENCV + "/data/right[01][0-9].jpg", "opencv-chessboard-calibration", "still"),
    ] + [(OPENCV + "/data/" + n, None, "still") for n in (
        "apple.jpg", "baboon.jpg", "board.jpg", "building.jpg", "butterfly.jpg", "chicky_512.png",
        "ela_original.jpg", "fruits.jpg", "home.jpg", "licenseplate_motion.jpg", "messi5.jpg", "orange.jpg",
        "squirrel_cls.jpg", "stuff.jpg", "sudoku.png", "text_defocus.jpg", "text_motion.jpg")] + [
        (OPENCV + "/dnn_superres/butterfly.png", None, "still"),
        (OPENCV + "/hfs/data/00[0-9].jpg", None, "still"),
        (OPENCV + "/reg/home.png", None, "still"),
        (OPENCV + "/text/scenetext0[0-9].jpg", None, "still"),
        (OPENCV + "/text/scenetext_segmented_word0[0-9].jpg", None, "still"),
        (OPENCV + "/data/vtest.avi", "opencv-vtest-video", "video"),
        (OPENCV + "/data/tree.avi", "opencv-tree-video", "video"),
    ],
    "plasma-workspace-wallpapers": [
        ("/usr/share/wallpapers/%s/contents/images/*" % d, None, "still")
        for d in ("BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow", "FallenLeaf", "Grey",
                  "Kite", "OneStandsOut", "Path", "summer_1am")],
    "mate-backgrounds": [("/usr/share/backgrounds/mate/nature/*.jpg", None, "still")],
    "lomiri-wallpapers-16.04": [("/usr/share/backgrounds/%s_by_*.jpg" % n, None, "still") for n in (
        "Bridge", "Dragonfly", "Picture_0B", "Picture_1A", "Wine", "aitzgorri", "free", "friends", "life",
        "picosdeeuropa", "seeding", "sunset")],
    "lomiri-wallpapers-20.04": [("/usr/share/backgrounds/Kleiber_by_*.jpg", None, "still")],
    "visp-images-data": [
        (VISP + "/AprilTag/AprilTag.pgm", None, "still"),
        (VISP + "/Solvay/*", "visp-solvay", "still"),
        (VISP + "/faces/*Solvay*", "visp-solvay", "still"),
        (VISP + "/calibration/grid36-0[0-9].pgm", "visp-calibration", "still"),
        (VISP + "/mbt/cube.ppm", "visp-mbt-cube", "still"),
        (VISP + "/mbt/cube/image[0-9]*.pgm", "visp-mbt-cube", "sequence"),
        (VISP + "/cube/image.[0-9]*.pgm", "visp-cube", "sequence"),
        (VISP + "/mbt-depth/castel/chateau.ppm", "visp-castel", "still"),
        (VISP + "/mbt-depth/castel/castel/image_[0-9]*.pgm", "visp-castel", "sequence"),
        (VISP + "/mire-2/image.[0-9]*.pgm", "visp-mire-2", "sequence"),
        (VISP + "/ellipse-1/image.[0-9]*.pgm", "visp-ellipse-1", "sequence"),
        (VISP + "/line/image.[0-9]*.pgm", "visp-line", "sequence"),
    ],
    "gnome-backgrounds": [], "ukui-wallpapers": [], "lomiri-wallpapers": [], "sway-backgrounds": [],
}
PACKAGES = tuple(ALLOW)
# Only these folders of a package are looked at (opencv-doc's HTML manual holds thousands of figures).
ROOTS = {"opencv-doc": OPENCV}
# Named reasons for notable files left out (the rest: "not on the allow list").
DENY_REASONS = [
    ("*/Megamind*.avi", "animation"), ("*/starry_night.jpg", "painting"), ("*/Klimt*", "painting"),
    ("*/HappyFish.jpg", "cartoon"), ("*/Blender_Suzanne*", "3-D render"), ("*/blox.jpg", "3-D render"),
    ("*/ela_modified.jpg", "edited copy of ela_original.jpg"), ("*/Castle-simu/*", "3-D render"),
    ("*/AprilTag/benchmark/*", "3-D render"), ("*/warp/*", "warped copies"), ("*/Gaussian-filter/*", "filtered copies"),
    ("*/mire/mire.*", "drawing"), ("*/circle/*", "drawing"), ("*/ellipse/ellipse.pgm", "drawing"),
    ("*/analogpattern_by_*", "texture, photo or render unclear"), ("*/greentock_by_*", "3-D render"),
    ("*/shape/*", "drawing"), ("*_mask.png", "mask"), ("*/scenetext_char*", "crop of a photo"),
    ("*/scenetext_word*", "crop of a photo"), ("*/tmpl.png", "crop"), ("*/templ.png", "crop"),
]


class PhotoError(RuntimeError):
    """A source cannot be read, a package is missing, or the inputs are inconsistent."""


# ----------------------------------------------------------------------------- packages
def package_files(pkg):
    """Installed files of a Debian package (dpkg -L), or None if it is not installed."""
    try:
        res = subprocess.run(["dpkg-query", "-L", pkg], capture_output=True, text=True)
    except FileNotFoundError:
        return None
    if res.returncode:
        return None
    return [p for p in res.stdout.split("\n") if p.startswith("/") and os.path.isfile(p)]


def package_version(pkg):
    res = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True, text=True)
    return res.stdout.strip() if res.returncode == 0 else ""


def parse_dep5(text):
    """[(patterns, licence)] of a machine-readable debian/copyright file, in file order."""
    stanzas, cur = [], {}
    key = None
    for line in text.split("\n") + [""]:
        if not line.strip():
            if cur:
                stanzas.append(cur)
            cur, key = {}, None
            continue
        if line[0] in " \t" and key:
            cur[key] += "\n" + line.strip()
            continue
        m = re.match(r"([A-Za-z-]+):\s*(.*)", line)
        if m:
            key = m.group(1).lower()
            cur[key] = m.group(2).strip()
    out = []
    for s in stanzas:
        if "files" in s and "license" in s:
            out.append((s["files"].split(), s["license"].split("\n")[0].strip()))
    return out


def licence_for(path, stanzas):
    """The licence of the last stanza whose Files pattern matches a trailing part of ``path`` (DEP-5:
    the last match wins; installed paths differ from source paths, so patterns match path suffixes)."""
    parts = path.strip("/").split("/")
    found = None
    for patterns, lic in stanzas:
        for pat in patterns:
            last = pat.rsplit("/", 1)[-1]
            if (pat == "*" or any(fnmatch.fnmatchcase("/".join(parts[i:]), pat) for i in range(len(parts)))
                    or ("/" in pat and not any(c in last for c in "*?[") and last == parts[-1])):
                found = lic   # the last clause: a packaged file whose folder differs from the source tree's
    return found or "unknown"


def package_licence(pkg, path, cache={}):
    cf = "/usr/share/doc/%s/copyright" % pkg
    if cf not in cache:
        try:
            with open(cf, errors="replace") as f:
                cache[cf] = parse_dep5(f.read())
        except OSError:
            cache[cf] = []
    return licence_for(path, cache[cf]) if cache[cf] else "see %s" % cf


# ----------------------------------------------------------------------------- image statistics
def thumbnail(img, side=256):
    h, w = img.shape[:2]
    s = min(1.0, side / float(max(h, w)))
    if s >= 1.0:
        return img
    return cv2.resize(img, (max(1, int(round(w * s))), max(1, int(round(h * s)))), interpolation=cv2.INTER_AREA)


def auto_stats(img):
    """(gray-level entropy in bits, share of the 16 most frequent 5-bit colours) of a BGR image's thumbnail."""
    t = thumbnail(img)
    g = cv2.cvtColor(t, cv2.COLOR_BGR2GRAY)
    p = np.bincount(g.ravel(), minlength=256).astype(np.float64)
    p = p[p > 0] / p.sum()
    ent = float(-(p * np.log2(p)).sum())
    q = (t >> 3).reshape(-1, 3).astype(np.int64)
    codes = (q[:, 0] << 10) | (q[:, 1] << 5) | q[:, 2]
    cnt = np.sort(np.bincount(codes))[::-1]
    top16 = float(cnt[:16].sum() / cnt.sum())
    return ent, top16


def looks_like_photo(entropy, top16=None):
    return entropy >= MIN_ENTROPY


def phash(img):
    """64-bit perceptual hash: the signs of the 8x8 low-frequency DCT of the 32x32 gray image
    against their median (DC left out), as an int."""
    g = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) if img.ndim == 3 else img
    small = cv2.resize(g, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    d = cv2.dct(small)[:8, :8].ravel()
    med = np.median(d[1:])
    bits = d > med
    bits[0] = False
    return int("".join("1" if b else "0" for b in bits), 2)


def hamming(a, b):
    return bin(a ^ b).count("1")


def sha256_bytes(data):
    return hashlib.sha256(data).hexdigest()


# ----------------------------------------------------------------------------- reading sources
def read_image(path):
    data = np.fromfile(path, np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if img is None:
        raise PhotoError("%s: not a readable image" % path)
    return img


def video_frame_indices(n_frames, k):
    """k frame indices spread evenly over 0..n_frames-1 (the middle of k equal parts)."""
    k = min(k, n_frames)
    return [int((2 * i + 1) * n_frames // (2 * k)) for i in range(k)]


def read_video_frames(path, indices):
    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        raise PhotoError("%s: cannot open the video" % path)
    want, out, i = set(indices), {}, 0
    try:
        while len(out) < len(want):
            ok, frame = cap.read()
            if not ok:
                break
            if i in want:
                out[i] = frame
            i += 1
    finally:
        cap.release()
    missing = sorted(want - set(out))
    if missing:
        raise PhotoError("%s: frames %s could not be read (the video has %d)" % (path, missing[:5], i))
    return [out[j] for j in indices]


def video_length(path):
    cap = cv2.VideoCapture(path)
    n = 0
    try:
        while cap.grab():
            n += 1
    finally:
        cap.release()
    return n


def resolve_source(path):
    """The file of a manifest path: absolute for Debian packages' files; for a Python package's file,
    relative to the folder holding the package (``skimage/data/astronaut.png``), so the committed
    manifest names no machine's virtual environment."""
    if os.path.isabs(path):
        return path
    import importlib.util
    top = path.split("/")[0]
    spec = importlib.util.find_spec(top)
    if spec is None or not spec.submodule_search_locations:
        raise PhotoError("%s: the Python package '%s' is not installed" % (path, top))
    return os.path.join(os.path.dirname(list(spec.submodule_search_locations)[0]), path)


def load_source(row):
    """The BGR image of a manifest row (a file, or frame ``member`` of a video)."""
    path = resolve_source(row["path"])
    if row.get("member", "") not in ("", None) and path.lower().endswith(VIDEO_EXT):
        return read_video_frames(path, [int(row["member"])])[0]
    return read_image(path)


def deny_reason(path):
    for pat, why in DENY_REASONS:
        if fnmatch.fnmatchcase(path, pat):
            return why
    return "not on the allow list"


def allow_entry(pkg, path):
    for pat, group, kind in ALLOW.get(pkg, ()):
        if fnmatch.fnmatchcase(path, pat):
            return group, kind
    return None


def stem_id(pkg, path, member=""):
    base = re.sub(r"[^A-Za-z0-9]+", "-", os.path.splitext(path)[0].split("/")[-1]).strip("-")
    parts = path.split("/")
    folder = parts[parts.index("wallpapers") + 1] if "wallpapers" in parts[:-1] else (parts[-2] if len(parts) > 2 else "")
    parent = re.sub(r"[^A-Za-z0-9]+", "-", folder)
    short = {"opencv-doc": "opencv", "plasma-workspace-wallpapers": "plasma", "mate-backgrounds": "mate",
             "lomiri-wallpapers-16.04": "lomiri1604", "lomiri-wallpapers-20.04": "lomiri2004",
             "visp-images-data": "visp"}.get(pkg, pkg)
    tag = "%s-%s-%s" % (short, parent, base)
    return tag + ("-f%05d" % int(member) if member != "" else "")


def candidates(pkg, files, frames=SEQUENCE_FRAMES):
    """Manifest rows (dicts) of one package's image and video files; sequences are thinned to
    ``frames`` evenly spaced files, videos to ``frames`` evenly spaced frames."""
    rows, seqs = [], {}
    root = ROOTS.get(pkg, "/")
    for path in sorted(files):
        if not path.startswith(root):
            continue
        low = path.lower()
        if not low.endswith(IMAGE_EXT + VIDEO_EXT):
            continue
        entry = allow_entry(pkg, path)
        row = dict(package=pkg, path=path, member="", group="", curated="", reason="")
        if entry is None:
            row.update(curated="no", reason=deny_reason(path))
            rows.append(row)
            continue
        group, kind = entry
        row.update(curated="photo", group=group or "")
        if kind == "sequence":
            seqs.setdefault(group, []).append(row)
        elif kind == "video":
            n = video_length(path)
            for i in video_frame_indices(n, frames):
                rows.append(dict(row, member=str(i)))
        else:
            rows.append(row)
    for group, members in sorted(seqs.items()):
        keep = set(video_frame_indices(len(members), frames))
        for i, row in enumerate(members):
            if i in keep:
                rows.append(row)
            else:
                rows.append(dict(row, curated="photo", reason="sequence frame not sampled (%d of %d taken)"
                                 % (len(keep), len(members)), skip=True))
    return rows


# ----------------------------------------------------------------------------- de-duplication and split
def dedupe(rows, max_dist=PHASH_MAX_DIST):
    """Mark rows that duplicate another (same sha256, or perceptual hashes within ``max_dist``
    bits): among duplicates the one with the most pixels stays (ties: the first in order).
    Rows must have sha256, phash (int), width, height and a boolean 'candidate'; sets 'duplicate_of'."""
    live = [r for r in rows if r.get("candidate")]
    order = sorted(live, key=lambda r: (-(r["width"] * r["height"]), r["id"]))
    kept = []
    seen_sha = {}
    for r in order:
        if r["sha256"] in seen_sha:
            r["duplicate_of"] = seen_sha[r["sha256"]]
            continue
        near = next((k for k in kept if hamming(k["phash"], r["phash"]) <= max_dist), None)
        if near is not None:
            r["duplicate_of"] = near["id"]
            continue
        seen_sha[r["sha256"]] = r["id"]
        kept.append(r)
    return rows


def hash_fraction(seed, group):
    return int(hashlib.sha256(("%s:%s" % (seed, group)).encode()).hexdigest(), 16) / float(2 ** 256)


def split_of(group, seed=SPLIT_SEED, val_fraction=VAL_FRACTION, fixed=None):
    """'val' or 'train' for a group: ``fixed`` ({group: split}) first, else the seeded hash rule."""
    if fixed and group in fixed:
        return fixed[group]
    return "val" if hash_fraction(seed, group) < val_fraction else "train"


# ----------------------------------------------------------------------------- views
def sample_views(photos, n, rng, size=VIEW_SIZE, max_tries=100, groups=None):
    """n distinct square crop boxes (photo index, x, y, side) over ``photos`` [(width, height)]:
    the group uniform among the groups (``groups``: one name per photo; None: every photo its own)
    that hold a photo whose shorter side is >= size, the photo uniform among those of the group
    (so a 24-photo calibration series weighs as much as one wallpaper), the side log-uniform in
    [size, shorter side] (several scales, never below ``size``: views are only downsampled),
    the position uniform. Raises PhotoError if no photo is large enough or the boxes run out."""
    ok = [i for i, (w, h) in enumerate(photos) if min(w, h) >= size]
    if not ok:
        raise PhotoError("no photo has a shorter side of at least %d px" % size)
    by_group = {}
    for i in ok:
        by_group.setdefault(i if groups is None else groups[i], []).append(i)
    members = [by_group[g] for g in sorted(by_group, key=str)]
    seen, out = set(), []
    while len(out) < n:
        for _ in range(max_tries):
            m = members[int(rng.randint(len(members)))]
            i = m[int(rng.randint(len(m)))]
            w, h = photos[i]
            top = math.log(min(w, h) / float(size))
            side = min(min(w, h), int(round(size * math.exp(rng.uniform(0.0, top))))) if top > 0 else size
            x = int(rng.randint(0, w - side + 1))
            y = int(rng.randint(0, h - side + 1))
            box = (i, x, y, side)
            if box not in seen:
                seen.add(box)
                out.append(box)
                break
        else:
            raise PhotoError("could not draw %d distinct views (got %d): too few or too small photos" % (n, len(out)))
    return out


def cut_view(img, x, y, side, size=VIEW_SIZE):
    """The crop (x, y, side) of img, downsampled to size x size (INTER_AREA; never upsampled)."""
    if side < size:
        raise PhotoError("crop side %d < view size %d would upsample" % (side, size))
    crop = img[y:y + side, x:x + side]
    if crop.shape[:2] != (side, side):
        raise PhotoError("crop %r is outside the %dx%d image" % ((x, y, side), img.shape[1], img.shape[0]))
    if side == size:
        return np.ascontiguousarray(crop)
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
