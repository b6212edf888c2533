"""CaffeNet's convolutional trunk (conv1 .. pool5), defined once.

The counting net's branches, its deploy net, the ported model's checks and every transfer
net (features, linear probe, FCN, Fast R-CNN) build or check the same five convolutions;
this module holds their sizes, the weight shapes that follow from them and the NetSpec
builder. Callers choose only what differs: the name suffix of a branch, the parameter
specs (shared by name, frozen, learned), the fillers, and the paddings FCN and Fast R-CNN add.
The geometry constants import without Caffe (ltc.torch_caffenet builds the same trunk in
PyTorch from them); only the NetSpec builder loads pycaffe.
"""

# (name, num_output, kernel, stride, pad, group), in net order.
CONVS = (("conv1", 96, 11, 4, 0, 1),
         ("conv2", 256, 5, 1, 2, 2),
         ("conv3", 384, 3, 1, 1, 1),
         ("conv4", 384, 3, 1, 1, 2),
         ("conv5", 256, 3, 1, 1, 2))
CONV_NAMES = tuple(c[0] for c in CONVS)
# pool1, pool2, pool5: max pooling (Caffe rounds the output size up); norm1, norm2: LRN across channels
POOL = dict(kernel_size=3, stride=2)
LRN = dict(local_size=5, alpha=1e-4, beta=0.75)


def _conv_shapes():
    shapes, channels = [], 3
    for name, num_output, kernel, _, _, group in CONVS:
        shapes.append((name, (num_output, channels // group, kernel, kernel)))
        channels = num_output
    return tuple(shapes)


# (name, weight blob shape): conv1 (96, 3, 11, 11) ... conv5 (256, 192, 3, 3).
CONV_SHAPES = _conv_shapes()
# Layer names of the trunk in net order (each branch of the counting net adds its suffix).
TRUNK_LAYERS = ("conv1", "relu1", "pool1", "norm1", "conv2", "relu2", "pool2", "norm2",
                "conv3", "relu3", "conv4", "relu4", "conv5", "relu5", "pool5")
POOL5_DIM = 256 * 3 * 3   # pool5 of a 114 x 114 counting input (an ImageNet 227 input gives 256 x 6 x 6)

def pooled_size(size):
    """Side of pool5 for a square input of side ``size``, as Caffe computes it (its pooling
    rounds the output size up: the last window starts inside the input); 3 at 114, 6 at 227."""
    s = size
    for name, _, k, stride, pad, _ in CONVS:
        s = (s + 2 * pad - k) // stride + 1
        if name in ("conv1", "conv2", "conv5"):   # pool1, pool2, pool5 follow these
            s = -(-(s - POOL["kernel_size"]) // POOL["stride"]) + 1
    return s



def trunk(n, bottom, suffix="", param=None, fillers=None, conv1_pad=0, pool_pad=(0, 0, 0), stop="pool5"):
    """Add conv1 .. pool5 (or .. relu5 with stop="relu5") to NetSpec ``n``; returns the last top.

    suffix: appended to every layer and top name (the counting net's branches).
    param: ``param(conv_name)`` -> list of ParamSpec dicts for that convolution, or None.
    fillers: dict(weight_filler=..., bias_filler=...) for every convolution, or None.
    conv1_pad / pool_pad: the padding FCN (conv1 100) and Fast R-CNN (conv1 5; pools 1, 1) add.
    """
    from caffe import layers as L, params as P

    def conv(spec, x, pad):
        name, num_output, kernel, stride, _, group = spec
        kw = dict(num_output=num_output, kernel_size=kernel)
        if stride != 1:
            kw["stride"] = stride
        if pad:
            kw["pad"] = pad
        if group != 1:
            kw["group"] = group
        if fillers:
            kw.update(fillers)
        if param is not None:
            kw["param"] = param(name)
        n[name + suffix] = L.Convolution(x, **kw)
        n["relu" + name[-1] + suffix] = L.ReLU(n[name + suffix], in_place=True)
        return n[name + suffix]

    def pool(name, x, pad):
        kw = dict(pad=pad) if pad else {}
        n[name + suffix] = L.Pooling(x, pool=P.Pooling.MAX, **dict(POOL, **kw))
        return n[name + suffix]

    def lrn(name, x):
        n[name + suffix] = L.LRN(x, **LRN)
        return n[name + suffix]

    x = conv(CONVS[0], bottom, conv1_pad)
    x = lrn("norm1", pool("pool1", x, pool_pad[0]))
    x = conv(CONVS[1], x, CONVS[1][4])
    x = lrn("norm2", pool("pool2", x, pool_pad[1]))
    for spec in CONVS[2:]:
        x = conv(spec, x, spec[4])
    if stop == "relu5":
        return x
    return pool("pool5", x, pool_pad[2])


def strip_learning(layers, params=True):
    """Drop the weight and bias fillers (and with params=True the ParamSpecs) of ``layers``
    (caffe_pb2.LayerParameter): what a deploy net or a saved model does not need."""
    for layer in layers:
        if params:
            del layer.param[:]
        for field in ("convolution_param", "inner_product_param"):
            if layer.HasField(field):
                getattr(layer, field).ClearField("weight_filler")
                getattr(layer, field).ClearField("bias_filler")
