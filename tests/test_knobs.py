"""ltc/knobs.py, the one declaration of every layer's param_str keys and of the generator's options
(issue 29): each declared key is what its layer accepts (real caffe.Net), an undeclared key is
refused, make_prototxt refuses every out-of-range option at the door (exit 2) in the layer's own
words, docs/knobs.md is the table the declarations give, and the refusal in a layer's setup is the
only one (switched off, the bad value goes through: nothing downstream checks it again)."""
import inspect
import json
import os
import subprocess
import sys

import pytest

import caffe
from conftest import load_script, write_test_lmdb
from ltc import REPO, knobs, nets
from ltc.params import ParamError, parse_params

mp = load_script("tools/make_prototxt.py")
NAMES6 = ("t1", "t2", "t3", "t4", "dx", "dy")


@pytest.fixture(scope="module")
def small_lmdb(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("knobs") / "lmdb")
    write_test_lmdb(path, 4, size=232)
    return path


def _net(tmp_path, text, name="net.prototxt"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def data_net(tmp_path, params):
    return _net(tmp_path, 'layer { name: "data" type: "Python" %s python_param { module: "counting_data" '
                          'layer: "CountingDataLayer" param_str: %s } }\n'
                % (" ".join('top: "%s"' % t for t in NAMES6), json.dumps(json.dumps(params))))


def loss_net(tmp_path, params):
    inputs = "".join('input: "%s" input_shape { dim: 2 dim: 3 }\n' % n for n in NAMES6)
    return _net(tmp_path, inputs + 'layer { name: "loss" type: "Python" %s top: "loss" loss_weight: 1 '
                                   'python_param { module: "counting_loss" layer: "CountingLossLayer" param_str: %s } }\n'
                % (" ".join('bottom: "%s"' % n for n in NAMES6), json.dumps(json.dumps(params))))


def resize_net(tmp_path, params):
    return _net(tmp_path, 'input: "x" input_shape { dim: 1 dim: 2 dim: 9 dim: 9 }\n'
                          'layer { name: "r" type: "Python" bottom: "x" top: "r" python_param { '
                          'module: "resize_layer" layer: "BilinearResizeLayer" param_str: %s } }\n'
                % json.dumps(json.dumps(params)))


def roi_net(tmp_path, params):
    return _net(tmp_path, 'input: "f" input_shape { dim: 1 dim: 2 dim: 8 dim: 8 }\n'
                          'input: "rois" input_shape { dim: 1 dim: 5 }\n'
                          'layer { name: "p" type: "Python" bottom: "f" bottom: "rois" top: "p" python_param { '
                          'module: "roi_pooling_layer" layer: "ROIPoolingLayer" param_str: %s } }\n'
                % json.dumps(json.dumps(params)))


# ----------------------------------------------------------------------------- the layers use the tables
def test_every_layer_module_parses_against_its_declaration():
    """The tables the layers hand to parse_params are the declarations themselves, and every
    python_layers module whose setup parses a param_str is declared."""
    import counting_data
    import counting_loss  # noqa: F401
    import resize_layer
    import roi_pooling_layer
    import voc_layers
    from ltc import loss
    assert counting_data.PARAM_KEYS is knobs.DATA and loss.PARAM_KEYS is knobs.LOSS
    assert resize_layer.PARAM_KEYS is knobs.RESIZE and roi_pooling_layer.SPEC is knobs.ROI_POOLING
    assert (voc_layers.CLS_SPEC, voc_layers.SEG_SPEC, voc_layers.DET_SPEC) == (knobs.VOC_CLS, knobs.VOC_SEG,
                                                                             knobs.VOC_DET)
    declared = {layer.module for layer in knobs.LAYERS}
    for name in os.listdir(os.path.join(REPO, "python_layers")):
        if name.endswith(".py") and "parse_params(" in open(os.path.join(REPO, "python_layers", name)).read():
            assert name[:-3] in declared, name
    for layer in knobs.LAYERS:
        module = __import__(layer.module)
        for cls in layer.classes:
            assert isinstance(getattr(module, cls), type), (layer.module, cls)


def _every_key(layer, **required):
    """Every declared key of ``layer`` at a valid value: its default, or ``required``'s."""
    return {k: required.get(k, layer[k].default) for k in layer}


def test_every_declared_key_is_accepted_by_its_layer_in_caffe(small_lmdb, tmp_path):
    """A param_str that sets every declared key (at its default, the required ones given) builds in
    real Caffe for each layer that needs no data set of its own."""
    data = dict(_every_key(knobs.DATA), source=small_lmdb, batch_size=2, workers=0)
    net = caffe.Net(data_net(tmp_path, data), caffe.TRAIN)
    net.forward()
    assert net.blobs["t1"].data.shape == (2, 3, 114, 114)
    caffe.Net(loss_net(tmp_path, _every_key(knobs.LOSS)), caffe.TRAIN)
    caffe.Net(resize_net(tmp_path, dict(_every_key(knobs.RESIZE), height=4, width=5)), caffe.TRAIN)
    caffe.Net(roi_net(tmp_path, _every_key(knobs.ROI_POOLING)), caffe.TRAIN)
    for layer in (knobs.VOC_CLS, knobs.VOC_SEG, knobs.VOC_DET):   # their setup needs a VOC index: parse only
        assert parse_params(json.dumps(dict(_every_key(layer), index="x.json")), layer, layer.classes[0])["index"] \
            == "x.json"


@pytest.mark.parametrize("layer", knobs.LAYERS, ids=[l.classes[0] for l in knobs.LAYERS])
def test_an_undeclared_key_is_refused(layer):
    given = {k: "x" for k in layer.required}
    given["not_a_knob"] = 1
    with pytest.raises(ParamError, match=r"%s: unknown param_str key\(s\) 'not_a_knob'; allowed keys: %s"
                       % (layer.classes[0], ", ".join(sorted(layer)))):
        parse_params(json.dumps(given), layer, layer.classes[0])


def test_an_undeclared_key_is_refused_by_the_real_data_layer(small_lmdb, tmp_path):
    with pytest.raises(ParamError, match="unknown param_str key.*'margin'"):
        caffe.Net(data_net(tmp_path, dict(source=small_lmdb, workers=0, margin=3)), caffe.TRAIN)


# ----------------------------------------------------------------------------- bad values, by the declaration
def bad_values(k):
    """Values the knob must refuse: one past each end of its range, a non-choice, a wrong kind."""
    out = []
    if k.choices is not None:
        out.append("nope" if k.kind is str else 227)
    if k.above is not None:
        out.append(k.above if k.kind is float else k.above)
        out.append(k.above - 1)
    if k.lo is not None:
        out.append(k.lo - (1 if k.kind is int else 0.5))
    if k.hi is not None:
        out.append(k.hi + (1 if k.kind is int else 0.5))
    if k.kind in (int, float) and k.choices is None:
        out.append("many" if k.kind is int else "ten")
    if k.kind is int and k.choices is None:
        out.append(2.5)
    return out


GEN_BAD = [(k, v) for k in knobs.NET.knobs if k.option for v in bad_values(k)]


def test_every_ranged_option_has_bad_values():
    ranged = [k.key for k in knobs.NET.knobs if k.option and (k.choices or k.range_text())]
    assert ranged and set(ranged) <= {k.key for k, _ in GEN_BAD}


@pytest.mark.parametrize("knob,value", GEN_BAD, ids=["%s=%r" % (k.key, v) for k, v in GEN_BAD])
def test_make_prototxt_refuses_out_of_range_options_in_the_layers_words(tmp_path, capsys, knob, value):
    """Exit 2 before anything is written, with "argument --OPTION: <the knob's message>"; a knob that
    sets a layer key gives the very words that layer's setup gives."""
    flag = "--" + knob.key.replace("_", "-")
    with pytest.raises(SystemExit) as e:
        mp.main(["--out-root", str(tmp_path), "--custom", "n", flag, str(value)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    line = err.strip().splitlines()[-1]
    assert line.split(": error: ", 1)[1].startswith("argument %s: must be " % flag), line
    assert not os.path.exists(str(tmp_path / "prototxt"))
    try:
        parsed = knob.from_text(str(value))     # a word of the knob's kind, refused for its range or choice
    except knobs.KnobError:
        parsed = None
    if knob.layer_key and parsed is not None:
        module, key = knob.layer_key.split(".")
        layer = {l.module: l for l in knobs.LAYERS}[module]
        given = {k: "x" for k in layer.required}
        given[key] = parsed
        with pytest.raises(ParamError) as refused:
            parse_params(json.dumps(given), layer, layer.classes[0])
        words = str(refused.value).split("param_str key '%s' " % key, 1)[1]
        assert line.endswith(": " + words), (line, words)


@pytest.mark.parametrize("args,message", [
    (["--margin", "-1"], "argument --margin: must be > 0, got -1.0"),
    (["--batch", "1"], "argument --batch: must be >= 2 (y comes from another member of the batch), got 1"),
    (["--dim", "0"], "argument --dim: must be >= 1, got 0"),
])
def test_make_prototxt_cli_refusals_exit_2(tmp_path, args, message):
    """The issue's three cases, as a user runs them."""
    res = subprocess.run([sys.executable, os.path.join(REPO, "tools", "make_prototxt.py"), "--out-root",
                          str(tmp_path), "--custom", "n"] + args, capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1] == "make_prototxt.py: error: " + message
    assert "Traceback" not in res.stderr and os.listdir(str(tmp_path)) == []


def test_render_refuses_a_bad_configuration_naming_its_key():
    """A library caller (tools/demo_seeds.py) meets the same check: nets.render writes nothing."""
    with pytest.raises(knobs.KnobError) as e:
        nets.render(dict(margin=0.0), "x")
    assert e.value.key == "margin" and str(e.value) == "must be > 0, got 0.0"
    with pytest.raises(knobs.KnobError, match="must be one of 'SGD', 'Adam', got 'RMSProp'"):
        nets.render(dict(solver_type="RMSProp"), "x")


# ----------------------------------------------------------------------------- one default each
def test_defaults_are_the_declarations():
    """nets.DEFAULTS, the layer defaults and the pipeline's signature agree, because each is read
    from the declaration (workers: "auto" everywhere; it was 2 in the layer and the pipeline)."""
    from ltc.pipeline import BatchPipeline
    assert nets.DEFAULTS == knobs.NET.defaults()
    for k in knobs.NET.knobs:
        if k.layer_key and k.key not in ("train_lmdb", "val_lmdb"):
            module, key = k.layer_key.split(".")
            assert nets.DEFAULTS[k.key] == {l.module: l for l in knobs.LAYERS}[module][key].default, k.key
    sig = inspect.signature(BatchPipeline).parameters
    for key in ("batch_size", "crop_size", "interpolation", "gray_prob", "seed", "workers", "prefetch", "eps",
                "test_batches", "shard", "num_shards", "partner"):
        assert sig[key].default == knobs.DATA[key].default, key
    assert knobs.DATA["workers"].default == nets.DEFAULTS["workers"] == "auto"
    assert (nets.DEFAULTS["margin"], knobs.MARGIN, knobs.EPS) == (10.0, 10.0, 1e-5)


# ----------------------------------------------------------------------------- the table
def test_docs_table_is_the_declarations():
    """docs/knobs.md is what make_prototxt writes from ltc/knobs.py (also checked by make_prototxt
    --check and tests/test_prototxt.py), and it names every key and option."""
    with open(os.path.join(REPO, knobs.DOC_PATH)) as f:
        text = f.read()
    assert text == knobs.doc_text(nets.GENERATOR), "docs/knobs.md is stale: run python tools/make_prototxt.py"
    for layer in knobs.LAYERS:
        for key in layer:
            assert "| `%s` |" % key in text, key
    for k in knobs.NET.knobs:
        assert ("`--%s`" % k.key.replace("_", "-") if k.option else "`%s` (no option)" % k.key) in text, k.key


def test_check_reports_a_stale_knob_table(tmp_path, capsys):
    assert mp.main(["--out-root", str(tmp_path)]) == 0
    path = tmp_path / knobs.DOC_PATH
    path.write_text(path.read_text().replace("| `batch_size` | 256 |", "| `batch_size` | 128 |"))
    capsys.readouterr()
    assert mp.main(["--out-root", str(tmp_path), "--check"]) == 1
    assert "stale or missing: docs/knobs.md" in capsys.readouterr().out


# ----------------------------------------------------------------------------- the check in setup is the one
@pytest.fixture
def checks_off(monkeypatch):
    """Knob.accept without its range and choice checks (kinds still pass through unchanged)."""
    monkeypatch.setattr(knobs.Knob, "accept", lambda self, value: value)


@pytest.mark.parametrize("make,params", [
    ("data", dict(batch_size=1)), ("data", dict(gray_prob=1.5)), ("data", dict(interpolation="nearest")),
    ("data", dict(eps=0.0)), ("data", dict(prefetch=0)), ("loss", dict(M=-1.0)), ("roi", dict(spatial_scale=0.0)), ("roi", dict(pooled_h=0)),
])
def test_setup_check_is_what_refuses(small_lmdb, tmp_path, request, make, params):
    """Mutation-style: with the declared checks on, the layer's setup refuses the value; with them
    switched off (as if a knob lost its range), the same net builds, so no later code (the pipeline,
    plan_batch, the loss) re-validates it: the setup check is the one that fires."""
    build = dict(data=lambda p: data_net(tmp_path, dict(dict(source=small_lmdb, batch_size=2, workers=0), **p)),
                 loss=lambda p: loss_net(tmp_path, p), roi=lambda p: roi_net(tmp_path, p))
    key = next(iter(params))
    with pytest.raises(ParamError, match="param_str key '%s' must be" % key):
        caffe.Net(build[make](params), caffe.TRAIN)
    request.getfixturevalue("checks_off")
    net = caffe.Net(build[make](params), caffe.TRAIN)
    if make == "data":
        net.layers[0].close()
