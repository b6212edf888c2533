"""PASCAL VOC layout: readers, writers and the index the Table 1 pipelines read.

A VOC tree (``VOCdevkit/VOC2007``, ``VOC2012`` or the toy set of ltc/voc_toy.py) holds::

    JPEGImages/<id>.jpg                 images
    Annotations/<id>.xml                objects: name, bndbox (1-based inclusive pixels), difficult
    SegmentationClass/<id>.png          palette-indexed class map: 0 background, 1..20 classes, 255 ignore
    ImageSets/Main/<set>.txt            image ids of a split (train, val, trainval, test)
    ImageSets/Segmentation/<set>.txt    ids of a split that has class maps
    classes.txt                         (optional, not in VOC) one class name a line, else the 20 VOC classes

SBD (Hariharan et al.'s ``benchmark_RELEASE/dataset``): ``img/<id>.jpg``, ``cls/<id>.mat``
(``GTcls.Segmentation``, same class indices, no ignore border) and ``train.txt``/``val.txt``.

Inside this package boxes are 0-based inclusive [x1, y1, x2, y2] (the XML value minus 1, as
py-faster-rcnn reads them); writers add the 1 back.

The index (``build_index``/``write_index``) is one JSON file per split that every pipeline reads::

    {"classes": [...], "root": "<tree>", "images": [{"id", "image", "width", "height",
      "objects": [{"class": k, "bbox": [x1, y1, x2, y2], "difficult": 0|1}, ...],
      "label": "<png path or null>"}]}

with paths relative to the index file's folder when they lie under it, absolute otherwise.
"""
import json
import os
import xml.etree.ElementTree as ET

import numpy as np

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
               "train", "tvmonitor")
IGNORE = 255


class VOCError(ValueError):
    """A VOC file or tree is malformed or missing; the message names the file."""


# ----------------------------------------------------------------------------- palette
def voc_palette(n=256):
    """The VOC colour map (bit-interleaved, as the devkit's labelcolormap.m): n x 3 uint8."""
    pal = np.zeros((n, 3), np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal[i] = (r, g, b)
    return pal


# ----------------------------------------------------------------------------- annotations
def _text(node, tag, path, required=True):
    el = node.find(tag)
    if el is None or el.text is None:
        if required:
            raise VOCError("%s: <%s> is missing" % (path, tag))
        return None
    return el.text.strip()


def read_annotation(path, classes=VOC_CLASSES):
    """One Annotations XML -> dict(filename, width, height, objects=[dict(name, class, bbox, difficult)]).

    bbox is 0-based inclusive [x1, y1, x2, y2]; class is the index in ``classes``; a missing
    <difficult> counts as 0 (as the devkit). Raises VOCError naming the file on bad content.
    """
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as e:
        raise VOCError("%s: cannot read the annotation XML (%s)" % (path, e))
    size = root.find("size")
    if size is None:
        raise VOCError("%s: <size> is missing" % path)
    try:
        width, height = int(_text(size, "width", path)), int(_text(size, "height", path))
    except ValueError:
        raise VOCError("%s: <size> width/height are not integers" % path)
    objects = []
    cidx = {c: i for i, c in enumerate(classes)}
    for obj in root.findall("object"):
        name = _text(obj, "name", path)
        if name not in cidx:
            raise VOCError("%s: object class '%s' is not one of %s" % (path, name, ", ".join(classes)))
        bb = obj.find("bndbox")
        if bb is None:
            raise VOCError("%s: object '%s' has no <bndbox>" % (path, name))
        try:
            box = [float(_text(bb, t, path)) - 1 for t in ("xmin", "ymin", "xmax", "ymax")]
        except ValueError:
            raise VOCError("%s: object '%s' has a non-numeric <bndbox>" % (path, name))
        if box[2] < box[0] or box[3] < box[1]:
            raise VOCError("%s: object '%s' has an empty box %s (1-based xml values)" % (path, name, [b + 1 for b in box]))
        diff = _text(obj, "difficult", path, required=False)
        objects.append(dict(name=name, **{"class": cidx[name]}, bbox=box, difficult=int(diff or 0)))
    return dict(filename=_text(root, "filename", path, required=False), width=width, height=height,
                objects=objects)


def write_annotation(path, filename, width, height, objects, folder="VOC", depth=3):
    """Write a VOC Annotations XML; objects: dicts with name, bbox (0-based inclusive), difficult."""
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = folder
    ET.SubElement(root, "filename").text = filename
    size = ET.SubElement(root, "size")
    for tag, v in (("width", width), ("height", height), ("depth", depth)):
        ET.SubElement(size, tag).text = str(int(v))
    ET.SubElement(root, "segmented").text = "1"
    for o in objects:
        el = ET.SubElement(root, "object")
        ET.SubElement(el, "name").text = o["name"]
        ET.SubElement(el, "pose").text = "Unspecified"
        ET.SubElement(el, "truncated").text = str(int(o.get("truncated", 0)))
        ET.SubElement(el, "difficult").text = str(int(o.get("difficult", 0)))
        bb = ET.SubElement(el, "bndbox")
        for tag, v in zip(("xmin", "ymin", "xmax", "ymax"), o["bbox"]):
            ET.SubElement(bb, tag).text = str(int(round(v)) + 1)
    ET.ElementTree(root).write(path)


# ----------------------------------------------------------------------------- class maps
def read_label_png(path):
    """SegmentationClass PNG -> H x W uint8 class indices (palette indices; 255 = ignore).

    Palette ('P') and 8-bit gray ('L') PNGs are read as their indices; an RGB rendering is refused.
    """
    from PIL import Image
    try:
        im = Image.open(path)
        im.load()
    except OSError as e:
        raise VOCError("%s: cannot read the label PNG (%s)" % (path, e))
    if im.mode not in ("P", "L"):
        raise VOCError("%s: label PNG is mode %s; VOC class maps are palette-indexed ('P')" % (path, im.mode))
    return np.array(im, dtype=np.uint8)


def write_label_png(path, label):
    """H x W uint8 class map -> palette-indexed PNG with the VOC colour map."""
    from PIL import Image
    label = np.asarray(label)
    if label.ndim != 2 or label.dtype != np.uint8:
        raise ValueError("write_label_png: need an H x W uint8 array, got %s %s" % (label.shape, label.dtype))
    im = Image.fromarray(label, mode="P")
    im.putpalette(voc_palette().ravel().tolist())
    im.save(path)


def read_sbd_mat(path):
    """SBD cls/<id>.mat -> H x W uint8 class map (GTcls.Segmentation)."""
    from scipy.io import loadmat
    try:
        m = loadmat(path, squeeze_me=False)
        seg = m["GTcls"]["Segmentation"][0, 0]
    except (OSError, KeyError, ValueError, IndexError, TypeError) as e:
        raise VOCError("%s: not an SBD GTcls .mat (%s)" % (path, e))
    return np.asarray(seg, np.uint8)


# ----------------------------------------------------------------------------- trees
def read_ids(path):
    """An ImageSets list (first column of each non-empty line)."""
    if not os.path.isfile(path):
        raise VOCError("image set '%s' is missing" % path)
    with open(path) as f:
        return [ln.split()[0] for ln in f if ln.strip()]


def read_classes(root):
    """classes.txt of the tree if present, else the 20 VOC classes."""
    p = os.path.join(root, "classes.txt")
    if os.path.isfile(p):
        with open(p) as f:
            names = tuple(ln.strip() for ln in f if ln.strip())
        if not names:
            raise VOCError("%s: no class names" % p)
        return names
    return VOC_CLASSES


def check_tree(root):
    for sub in ("JPEGImages", "ImageSets"):
        if not os.path.isdir(os.path.join(root, sub)):
            raise VOCError("'%s' is not a VOC tree: %s/ is missing (expected e.g. VOCdevkit/VOC2007)" % (root, sub))


def build_index(root, image_set, kind="Main", classes=None, with_labels=None, sbd_root=None):
    """Index entries of one split of a VOC tree (see the module docstring).

    kind: "Main" (ImageSets/Main/<set>.txt, annotations required) or "Segmentation"
    (ImageSets/Segmentation/<set>.txt, class maps required; annotations read if present).
    sbd_root: an SBD ``dataset`` folder; then image_set names SBD's train/val list and images and
    class maps come from SBD (the .mat maps are returned as arrays under key 'label_array').
    """
    classes = tuple(classes or (read_classes(root) if root else VOC_CLASSES))
    entries = []
    if sbd_root:
        for i in read_ids(os.path.join(sbd_root, image_set + ".txt")):
            img = os.path.join(sbd_root, "img", i + ".jpg")
            if not os.path.isfile(img):
                raise VOCError("SBD image '%s' is missing" % img)
            lab = read_sbd_mat(os.path.join(sbd_root, "cls", i + ".mat"))
            entries.append(dict(id=i, image=img, width=int(lab.shape[1]), height=int(lab.shape[0]), objects=[],
                                label=None, label_array=lab))
        return classes, entries
    check_tree(root)
    ids = read_ids(os.path.join(root, "ImageSets", kind, image_set + ".txt"))
    if with_labels is None:
        with_labels = kind == "Segmentation"
    for i in ids:
        img = os.path.join(root, "JPEGImages", i + ".jpg")
        if not os.path.isfile(img):
            raise VOCError("image '%s' (listed in ImageSets/%s/%s.txt) is missing" % (img, kind, image_set))
        xml = os.path.join(root, "Annotations", i + ".xml")
        if os.path.isfile(xml):
            ann = read_annotation(xml, classes)
        elif kind == "Main":
            raise VOCError("annotation '%s' is missing" % xml)
        else:
            ann = None
        label = os.path.join(root, "SegmentationClass", i + ".png")
        if with_labels and not os.path.isfile(label):
            raise VOCError("class map '%s' (listed in ImageSets/%s/%s.txt) is missing" % (label, kind, image_set))
        if ann is None:
            from PIL import Image
            w, h = Image.open(img).size
            objs = []
        else:
            w, h = ann["width"], ann["height"]
            objs = [{"class": o["class"], "bbox": o["bbox"], "difficult": o["difficult"]} for o in ann["objects"]]
        entries.append(dict(id=i, image=img, width=w, height=h, objects=objs,
                            label=label if os.path.isfile(label) else None))
    return classes, entries


def write_index(path, classes, entries, root=""):
    """Write the JSON index; paths under the index's folder are stored relative to it."""
    base = os.path.dirname(os.path.abspath(path))

    def rel(p):
        if p is None:
            return None
        ap = os.path.abspath(p)
        return os.path.relpath(ap, base) if ap.startswith(base + os.sep) else ap
    out = dict(classes=list(classes), root=rel(root) if root else "",
               images=[dict({k: v for k, v in e.items() if k != "label_array"}, image=rel(e["image"]),
                            label=rel(e.get("label"))) for e in entries])
    os.makedirs(base, exist_ok=True)
    with open(path, "w") as f:
        json.dump(out, f, indent=0)
    return path


def read_index(path):
    """(classes, entries) of a JSON index, paths made absolute; VOCError naming the file if malformed."""
    try:
        with open(path) as f:
            d = json.load(f)
    except (OSError, ValueError) as e:
        raise VOCError("index '%s' cannot be read (%s); build it with data_prep/voc.py" % (path, e))
    if not isinstance(d, dict) or "classes" not in d or "images" not in d:
        raise VOCError("index '%s' lacks 'classes'/'images'; build it with data_prep/voc.py" % path)
    base = os.path.dirname(os.path.abspath(path))
    entries = []
    for e in d["images"]:
        e = dict(e)
        e["image"] = os.path.join(base, e["image"])
        if e.get("label"):
            e["label"] = os.path.join(base, e["label"])
        entries.append(e)
    return tuple(d["classes"]), entries


def load_image(path):
    """BGR uint8 H x W x 3 (cv2), VOCError naming the file if it cannot be decoded."""
    import cv2
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise VOCError("image '%s' cannot be read" % path)
    return img
