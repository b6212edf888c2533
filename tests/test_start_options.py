"""The start options of tools/make_prototxt.py (issue 26): fc biases, fc8 weight std, warm-up to
the recipe's lr, solver type; the paper's files unchanged; every numeric option checked at the
command line (exit 2 with a message, nothing written)."""
import os

import numpy as np
import pytest

import caffe
from caffe.proto import caffe_pb2
from google.protobuf import text_format

from conftest import load_script
from ltc import REPO, nets

mp = load_script("tools/make_prototxt.py")


def _custom(tmp_path, *opts):
    argv = ["--out-root", str(tmp_path), "--custom", "c", "--layout", "stacked", "--batch", "2", "--dim", "20"] + list(opts)
    assert mp.main(argv) == 0
    tv = caffe_pb2.NetParameter()
    text_format.Merge(open(tmp_path / "prototxt/c/train_val.prototxt").read(), tv)
    s = caffe_pb2.SolverParameter()
    text_format.Merge(open(tmp_path / "prototxt/c/solver.prototxt").read(), s)
    return {l.name: l for l in tv.layer}, s


def test_defaults_keep_the_paper_start_and_sgd(tmp_path):
    layers, s = _custom(tmp_path)
    for name in ("fc6", "fc7", "fc8"):
        p = layers[name].inner_product_param
        assert (p.weight_filler.type, p.bias_filler.value) == ("xavier", pytest.approx(0.1))
    assert layers["conv1"].convolution_param.bias_filler.value == 0
    assert not s.HasField("type") and s.lr_policy == "step"      # SGD: the field stays unset
    # the committed paper solvers name no solver type and no warm-up
    for rel in ("prototxt/solver.prototxt", "prototxt/stacked/solver.prototxt"):
        text = open(os.path.join(REPO, rel)).read()
        assert "type:" not in text and 'lr_policy: "step"' in text, rel


def test_start_options_reach_the_prototxt(tmp_path):
    layers, s = _custom(tmp_path, "--fc-bias", "0", "--fc8-bias", "0.02", "--fc8-std", "0.004",
                        "--solver-type", "Adam", "--warmup", "100", "--base-lr", "2e-4")
    for name in ("fc6", "fc7"):
        p = layers[name].inner_product_param
        assert (p.weight_filler.type, p.bias_filler.value) == ("xavier", 0.0)
    p = layers["fc8"].inner_product_param
    assert (p.weight_filler.type, p.weight_filler.std, p.bias_filler.value) == \
        ("gaussian", pytest.approx(0.004), pytest.approx(0.02))
    assert layers["conv5"].convolution_param.weight_filler.type == "xavier"
    assert s.type == "Adam" and s.base_lr == pytest.approx(2e-4)
    # the warm-up ends at base_lr, not beyond: sigmoid policy lr = base_lr / (1 + exp(-gamma (it - stepsize)))
    lr = lambda it: s.base_lr / (1 + np.exp(-s.gamma * (it - s.stepsize)))  # noqa: E731
    assert s.lr_policy == "sigmoid" and lr(0) < 0.01 * s.base_lr
    assert 0.99 * s.base_lr < lr(100) < s.base_lr and lr(10 ** 6) <= s.base_lr


def test_start_options_instantiate_in_caffe_with_the_drawn_statistics(tmp_path):
    """fc8 ~ N(0, std^2) and the bias constants, as Caffe draws them; Adam builds an AdamSolver."""
    cfg = dict(nets.DEFAULTS, layout="stacked", batch=2, dim=1000, fc_bias=0.0, fc8_bias=0.03, fc8_std=0.004,
               solver_type="Adam")
    net_path = tmp_path / "n.prototxt"
    net_path.write_text(str(nets.counting_net(cfg, inputs="input")))
    sp = nets.solver(dict(cfg, snapshot_prefix=str(tmp_path / "s")), str(net_path))
    sp.ClearField("test_iter")
    sp.ClearField("test_interval")
    (tmp_path / "solver.prototxt").write_text(str(sp))
    caffe.set_random_seed(5)
    solver = caffe.get_solver(str(tmp_path / "solver.prototxt"))
    assert type(solver).__name__ == "AdamSolver"
    w = solver.net.params["fc8"][0].data
    # 4.1M draws: the sample std's relative standard error is 1/sqrt(2n) = 3.5e-4; 1 % is > 25 of them
    assert w.shape == (1000, 4096) and abs(w.std() / 0.004 - 1) < 0.01 and abs(w.mean()) < 0.004 * 0.01
    assert np.all(solver.net.params["fc8"][1].data == np.float32(0.03))
    assert np.all(solver.net.params["fc6"][1].data == 0) and np.all(solver.net.params["fc7"][1].data == 0)


BAD = [
    (["--margin", "-1"], "--margin"), (["--margin", "0"], "--margin"), (["--margin", "inf"], "--margin"),
    (["--margin", "nan"], "--margin"), (["--batch", "1"], "--batch"), (["--dim", "0"], "--dim"),
    (["--gray-prob", "1.5"], "--gray-prob"), (["--gray-prob", "-0.1"], "--gray-prob"),
    (["--max-iter", "0"], "--max-iter"), (["--workers", "100000"], "--workers"), (["--workers", "-1"], "--workers"),
    (["--base-lr", "0"], "--base-lr"), (["--base-lr", "nan"], "--base-lr"), (["--fc8-std", "0"], "--fc8-std"),
    (["--fc8-std", "-0.01"], "--fc8-std"), (["--fc-bias", "nan"], "--fc-bias"), (["--warmup", "-5"], "--warmup"),
    (["--test-batch", "0"], "--test-batch"), (["--snapshot", "0"], "--snapshot"), (["--dim", "x"], "--dim"),
    (["--solver-type", "RMSProp"], "--solver-type"),
]


@pytest.mark.parametrize("opts,flag", BAD)
def test_bad_numbers_are_refused_with_exit_2(tmp_path, capsys, opts, flag):
    with pytest.raises(SystemExit) as e:
        mp.main(["--out-root", str(tmp_path), "--custom", "c"] + opts)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "argument %s" % flag in err and "Traceback" not in err
    assert not (tmp_path / "prototxt").exists()      # nothing written


@pytest.mark.parametrize("opts", [["--margin", "5"], ["--fc8-std", "0.004"], ["--solver-type", "Adam"],
                                  ["--warmup=50"], ["--batch", "32", "--check"]])
def test_custom_options_without_custom_are_refused(tmp_path, capsys, opts):
    with pytest.raises(SystemExit) as e:
        mp.main(["--out-root", str(tmp_path)] + opts)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "only with --custom DIR" in err and opts[0].split("=")[0] in err
    assert not (tmp_path / "prototxt").exists()


def test_good_edge_values_are_accepted(tmp_path):
    layers, s = _custom(tmp_path, "--gray-prob", "1", "--margin", "0.5", "--workers", str(mp.MAX_WORKERS),
                        "--warmup", "0", "--fc-bias", "-0.1")
    assert layers["fc6"].inner_product_param.bias_filler.value == pytest.approx(-0.1)
    assert s.lr_policy == "step"
