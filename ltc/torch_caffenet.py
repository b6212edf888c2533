"""CaffeNet in plain PyTorch, laid out like the project's Caffe nets (no Caffe needed).

    from ltc.torch_caffenet import load
    net, prep = load("runs/demo/counting_trunk.pt")
    conv5 = net.extract(prep("photo.jpg"), ["conv5"])["conv5"]      # 1 x 256 x 6 x 6 at 114 input

The module reproduces Caffe's CaffeNet (the trunk of the counting net) operation for operation:
conv1 (96, 11x11, stride 4) -> ReLU -> max pool 3/2 -> LRN -> conv2 (256, 5x5, pad 2,
2 groups) -> ReLU -> max pool 3/2 -> LRN -> conv3 (384, 3x3, pad 1) -> ReLU -> conv4 (384,
2 groups) -> ReLU -> conv5 (256, 2 groups) -> ReLU -> max pool 3/2 [-> fc6 -> ReLU -> fc7 ->
ReLU -> fc8 -> ReLU, the counting head]. Parameter names are Caffe's layer names
(``conv1.weight``, ``conv1.bias``, ..., ``fc8.bias``) and the tensors are Caffe's blobs
unchanged: grouped convolutions store their weights as Caffe does (conv2 is 256x48x5x5).

Caffe's conventions kept here:
- max pooling rounds the output size up (ceil mode): pool5 is 3x3 at 114 input, 6x6 at 227;
- LRN (ACROSS_CHANNELS, local_size 5, alpha 1e-4, beta 0.75, k 1) divides by
  (k + alpha / size * sum of squares over the size channels centred on c)^beta, zero-padded;
- ReLUs run in place in Caffe, so the blob Caffe calls ``conv1`` holds the rectified output;
  :meth:`CaffeNet.extract` returns the same (``conv1`` .. ``conv5``, ``fc6`` .. ``fc8`` after
  their ReLU; ``pool1``, ``norm1``, ``pool2``, ``norm2``, ``pool5`` as named).

Input convention (stored with every exported file, see :func:`load`): BGR channel order,
0-255 values, then either ``per-image`` normalisation, ``(v - mean) / (std + eps)`` with
mean and std over all pixels and channels of the image (what the counting net saw), or
``bgr-mean``: subtract the BGR means (104, 117, 123) per channel (conv1 of such a file has
the average input std folded in, as tools/port_weights.py --fold-std writes it).
"""
import collections

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ltc import caffenet
from ltc.caffenet import CONV_NAMES, CONVS   # (name, num_output, kernel, stride, pad, group); no Caffe needed

# what follows each conv (after its ReLU), in net order
AFTER = {"conv1": ("pool1", "norm1"), "conv2": ("pool2", "norm2"), "conv5": ("pool5",)}
HEAD_NAMES = ("fc6", "fc7", "fc8")
LRN = dict(size=caffenet.LRN["local_size"], alpha=caffenet.LRN["alpha"], beta=caffenet.LRN["beta"], k=1.0)  # Caffe's k
POOL = caffenet.POOL
BGR_MEAN = (104.0, 117.0, 123.0)
FORMAT = "learning-to-count/caffenet"
FORMAT_VERSION = 1


pooled_size = caffenet.pooled_size


class CaffeLRN(nn.Module):
    """Caffe's LRN, ACROSS_CHANNELS: x / (k + alpha/size * sum_{|c'-c| <= size//2} x_c'^2)^beta."""

    def __init__(self, size=5, alpha=1e-4, beta=0.75, k=1.0):
        super().__init__()
        if size % 2 != 1:
            raise ValueError("Caffe's LRN needs an odd local_size, got %d" % size)
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def forward(self, x):
        # F.local_response_norm averages the squares over the window (alpha / size), with
        # size // 2 zero channels on each side for odd sizes: Caffe's formula.
        return F.local_response_norm(x, self.size, self.alpha, self.beta, self.k)

    def extra_repr(self):
        return "size=%d, alpha=%g, beta=%g, k=%g" % (self.size, self.alpha, self.beta, self.k)


class CaffeNet(nn.Module):
    """The CaffeNet trunk conv1..pool5, with the counting head fc6..fc8 (+ ReLUs) if ``head``.

    head: None (trunk only, any input size) or the output sizes of (fc6, fc7, fc8), e.g.
    (4096, 4096, 1000) for the counting net; then the input side must be ``input_size``
    (fc6 takes 256 x pooled_size(input_size)^2 values: 2304 at 114).
    """

    def __init__(self, head=None, input_size=114):
        super().__init__()
        cin = 3
        for name, cout, k, stride, pad, groups in CONVS:
            setattr(self, name, nn.Conv2d(cin, cout, k, stride=stride, padding=pad, groups=groups))
            cin = cout
        self.pool = nn.MaxPool2d(ceil_mode=True, **POOL)
        self.lrn = CaffeLRN(**LRN)
        self.head = tuple(int(h) for h in head) if head else None
        self.input_size = int(input_size)
        if self.head:
            if len(self.head) != 3:
                raise ValueError("head must give the sizes of fc6, fc7, fc8, got %r" % (head,))
            prev = 256 * pooled_size(self.input_size) ** 2
            for name, n in zip(HEAD_NAMES, self.head):
                setattr(self, name, nn.Linear(prev, n))
                prev = n

    def layer_names(self):
        """The blobs :meth:`extract` can return, in net order."""
        names = []
        for c in CONV_NAMES:
            names += [c] + list(AFTER.get(c, ()))
        return names + (list(HEAD_NAMES) if self.head else [])

    def _run(self, x, wanted):
        out = collections.OrderedDict()
        last = wanted[-1] if wanted else None

        def keep(name, value):
            if name in wanted:
                out[name] = value
            return name == last

        for name in CONV_NAMES:
            x = F.relu(getattr(self, name)(x))
            if keep(name, x):
                return out, x
            for after in AFTER.get(name, ()):
                x = self.pool(x) if after.startswith("pool") else self.lrn(x)
                if keep(after, x):
                    return out, x
        if self.head:
            x = torch.flatten(x, 1)
            for name in HEAD_NAMES:
                x = F.relu(getattr(self, name)(x))
                if keep(name, x):
                    return out, x
        return out, x

    def extract(self, x, names=("conv5",)):
        """{name: activation} for the blobs ``names`` (see :meth:`layer_names`); stops at the last one."""
        order = self.layer_names()
        unknown = [n for n in names if n not in order]
        if unknown:
            raise KeyError("unknown blob(s) %s; this net has %s" % (", ".join(unknown), ", ".join(order)))
        wanted = sorted(set(names), key=order.index)
        out, _ = self._run(x, wanted)
        return out

    def forward(self, x):
        """pool5 (trunk) or the rectified fc8, the counting vector (with the head)."""
        return self._run(x, ())[1]


class Outputs(nn.Module):
    """A CaffeNet whose forward returns the tuple of blobs ``names`` (used for ONNX export)."""

    def __init__(self, net, names):
        super().__init__()
        self.net, self.names = net, tuple(names)

    def forward(self, x):
        out = self.net.extract(x, self.names)
        return tuple(out[n] for n in self.names)


# ----------------------------------------------------------------------------- preprocessing
def preprocess(image, meta, size=None):
    """A BGR HxWx3 uint8 image (or an image file path) -> a 1x3xSxS float32 tensor for the net.

    The whole image is resized to S x S (``size``, default the file's input size) with area
    interpolation, then normalised as ``meta["input"]`` says (see the module docstring).
    """
    import cv2

    if isinstance(image, (str, bytes)) or hasattr(image, "__fspath__"):
        path = image
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)      # BGR
        if image is None:
            raise ValueError("%s: not a readable image file" % path)
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError("expected a HxWx3 BGR image, got shape %s" % (image.shape,))
    inp = meta["input"]
    size = int(size or inp["size"])
    img = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)
    if inp["normalization"] == "per-image":
        from ltc.transforms import normalize  # OpenCV: only here, so the net itself needs torch and numpy alone
        x = normalize(img, inp["eps"])   # the data layer's reference normalisation
    elif inp["normalization"] == "bgr-mean":
        x = img - np.asarray(inp["mean_bgr"], np.float32)
    else:
        raise ValueError("unknown input normalization %r" % inp["normalization"])
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)[None]))


# ----------------------------------------------------------------------------- files
def build(meta):
    """An (untrained) CaffeNet shaped as an exported file's metadata says."""
    return CaffeNet(head=meta.get("head"), input_size=meta["input"]["size"])


def load(path, map_location="cpu"):
    """Load a file written by ``tools/export.py --format torch``: returns (net in eval mode, prep).

    ``prep(image_or_path, size=None)`` applies the file's input convention; the metadata is
    ``net.meta``.
    """
    blob = torch.load(str(path), map_location=map_location, weights_only=True)
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ValueError("%s: not a CaffeNet file written by tools/export.py --format torch" % path)
    if blob.get("version") != FORMAT_VERSION:
        raise ValueError("%s: format version %r, this module reads version %d" % (path, blob.get("version"),
                                                                                 FORMAT_VERSION))
    meta = blob["metadata"]
    net = build(meta)
    net.load_state_dict(blob["state_dict"], strict=True)
    net.meta = meta
    net.eval()

    def prep(image, size=None):
        return preprocess(image, meta, size)

    return net, prep
