"""The linear-probe transfer check's library part: which layers are probed, reading an LMDB's
labels, and refusing weights that are not a ported CaffeNet conv1..conv5 model.
The command is tools/linear_probe.py; tools/transfer_check.py uses the same checks."""
import os

import numpy as np
from caffe.proto import caffe_pb2

from ltc import lmdb_io
from ltc import surgery
from ltc import transfer_nets

LAYERS = tuple(name for name, _ in transfer_nets.PROBE_SIZES)   # conv1..conv5, pool5


class ProbeError(ValueError):
    """Bad input to the probe; the message names the file and the problem."""


def read_labels(path, limit=None):
    """Labels of an LMDB in key order (Datum field 'label'; images are not decoded)."""
    env = lmdb_io.open_lmdb(path, "linear_probe")
    labels = []
    try:
        with env.begin() as txn:
            d = caffe_pb2.Datum()
            for i, (_, v) in enumerate(txn.cursor()):
                if limit is not None and i >= limit:
                    break
                d.ParseFromString(v)
                labels.append(d.label)
    finally:
        env.close()
    return np.array(labels, np.int64)


def check_weights(path):
    """Refuse a file that is not a CaffeNet conv1..conv5 model; returns {layer: [weights, bias]}."""
    if not os.path.isfile(path):
        raise ProbeError("%s: no such file" % path)
    try:
        model = surgery.CountingModel(path)
        raise ProbeError("%s: this is a %s counting snapshot; port it first: python tools/port_weights.py %s OUT.caffemodel "
                         "--fold-std TRAIN_LMDB" % (path, model.kind, path))
    except surgery.PortError:
        pass
    net = caffe_pb2.NetParameter()
    try:
        with open(path, "rb") as f:
            net.ParseFromString(f.read())
    except Exception as e:  # protobuf DecodeError
        raise ProbeError("%s: not a readable .caffemodel (%s)" % (path, e))
    by = {l.name: l for l in net.layer}
    out = {}
    for name, shape in surgery.CONV_SHAPES:
        if name not in by or len(by[name].blobs) != 2:
            raise ProbeError("%s: no layer '%s' with weights and bias: not a CaffeNet-layout model "
                             "(tools/port_weights.py writes one)" % (path, name))
        got = surgery.blob_shape(by[name].blobs[0])
        if got != shape:
            raise ProbeError("%s: '%s' weights are %s, CaffeNet's are %s" % (path, name, surgery.fmt_shape(got), surgery.fmt_shape(shape)))
        out[name] = [surgery.blob_array(b) for b in by[name].blobs]
    return out


def warn_if_sorted(labels, num_classes):
    if len(labels) > 20 and num_classes > 2:
        same = float(np.mean(labels[1:] == labels[:-1]))
        if same > 0.5:
            print("WARNING: %.0f%% of consecutive training labels are equal: the LMDB looks sorted by class, and "
                  "Caffe's Data layer reads it in key order; rebuild it shuffled for a meaningful probe" % (100 * same))
