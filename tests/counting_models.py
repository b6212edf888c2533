"""Test helper (not a test module): small counting-net snapshots saved by real Caffe.

``build_counting_model(path, layout)`` builds the project's counting net with
tools/make_prototxt.py (layout "six", "stacked" or "deploy"), shrinks fc6/fc7 to ``head``
outputs so the files stay small (fc6 still takes the 3x3x256 pool5), fills every parameter
with seeded random values, saves it with ``net.save`` and returns the caffe.Net.
"""

import numpy as np

import caffe

from ltc import caffenet
from ltc import nets

PLAIN = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")


def counting_netparam(layout="six", head=64, dim=20, batch=1):
    cfg = dict(nets.DEFAULTS, batch=batch, dim=dim, layout="six" if layout == "deploy" else layout)
    netp = nets.deploy_net(cfg) if layout == "deploy" else nets.counting_net(cfg, inputs="input")
    for layer in netp.layer:
        if layer.name.split("_")[0] in ("fc6", "fc7"):
            layer.inner_product_param.num_output = head
    return netp


def randomize(net, seed=0):
    """Seeded random weights (std 1/sqrt(fan in)) and biases in the plain-named layers."""
    rng = np.random.RandomState(seed)
    for name in PLAIN:
        w, b = net.params[name][0], net.params[name][1]
        fan_in = int(np.prod(w.data.shape[1:]))
        w.data[...] = rng.normal(0, 1.0 / np.sqrt(fan_in), w.data.shape)
        b.data[...] = rng.normal(0.05, 0.02, b.data.shape)


def build_counting_model(path, layout="six", head=64, dim=20, seed=0, netparam=None):
    netp = netparam if netparam is not None else counting_netparam(layout, head, dim)
    proto = str(path) + ".prototxt"
    with open(proto, "w") as f:
        f.write(str(netp))
    net = caffe.Net(proto, caffe.TEST)
    randomize(net, seed)
    net.save(str(path))
    return net


# CaffeNet's conv layers and weight shapes (checked against literal shapes in test_prototxt.py):
# what a ported model must hold.
CONVS = caffenet.CONV_NAMES
CAFFENET_CONV_SHAPES = dict(caffenet.CONV_SHAPES)


def small_train_net(train_lmdb, val_lmdb, batch=2, workers=1, prefetch=3, test_batches=3, head=16, dim=20):
    """The counting training net (counting data layer for TRAIN and TEST, six branches, the
    counting loss) with fc6/fc7 shrunk to ``head`` outputs: a few MB per snapshot."""
    cfg = dict(nets.DEFAULTS, batch=batch, test_batch=batch, dim=dim, train_lmdb=str(train_lmdb),
               val_lmdb=str(val_lmdb), workers=workers, prefetch=prefetch, test_iter=test_batches)
    netp = nets.counting_net(cfg)
    for layer in netp.layer:
        if layer.name.split("_")[0] in ("fc6", "fc7"):
            layer.inner_product_param.num_output = head
    return netp
