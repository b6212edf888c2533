"""Strict JSON param_str parsing shared by the project's Python layers.

Every layer's keys are declared once in ltc/knobs.py (default, kind, range, meaning);
``parse_params`` rejects unknown keys, missing required keys, wrong kinds, out-of-range
values and malformed JSON with a message that names the layer and the key and says what to
fix. No eval, no YAML.

    p = parse_params(param_str, knobs.LOSS, "CountingLossLayer")
    p["M"]  -> 10.0
    parse_params('{"M": -1}', knobs.LOSS, "CountingLossLayer")
        -> ParamError("CountingLossLayer: param_str key 'M' must be > 0, got -1.0")

An older {key: (default, type)} table is accepted too (``knobs.LayerKnobs.from_spec``).
The data layer's defaults are read here by name (CROP_SIZE, INTERPOLATION, GRAY_PROB, SEED,
EPS, MARGIN): they are ltc/knobs.py's, not a second declaration.
"""
import json

from ltc import knobs
from ltc.knobs import IntOr  # noqa: F401  (the older table form's type, re-exported)

CROP_SIZE = knobs.CROP_SIZE
INTERPOLATION = knobs.INTERPOLATION
GRAY_PROB = knobs.GRAY_PROB
SEED = knobs.SEED
EPS = knobs.EPS
MARGIN = knobs.MARGIN


class ParamError(ValueError):
    """A layer's param_str is wrong; the message says which key and why."""


def parse_params(param_str, spec, layer="layer", required=()):
    """Parse ``param_str`` (JSON object or empty) against ``spec``.

    spec: a knobs.LayerKnobs (its required keys must be present), or a {key: (default, type)}
    table where type is float/int/str/bool/list/dict, a tuple of allowed literal values or an
    IntOr. Keys in ``required`` must be present as well. Returns a dict with every key of spec;
    raises ParamError naming the layer and the key.
    """
    if not isinstance(spec, knobs.LayerKnobs):
        spec = knobs.LayerKnobs.from_spec(spec)
    text = (param_str or "").strip()
    if text:
        try:
            given = json.loads(text)
        except ValueError as e:
            raise ParamError("%s: param_str is not valid JSON (%s): %r" % (layer, e, text))
        if not isinstance(given, dict):
            raise ParamError("%s: param_str must be a JSON object like {\"key\": value}, got %r" % (layer, text))
    else:
        given = {}
    unknown = sorted(set(given) - set(spec))
    if unknown:
        raise ParamError("%s: unknown param_str key(s) %s; allowed keys: %s"
                         % (layer, ", ".join(repr(k) for k in unknown), ", ".join(sorted(spec))))
    missing = [k for k in spec.required + tuple(required) if k not in given]
    if missing:
        raise ParamError("%s: param_str is missing required key(s) %s" % (layer, ", ".join(repr(k) for k in missing)))
    try:
        out = {key: spec[key].accept(given[key]) if key in given else spec[key].default for key in spec}
        spec.check_rules(out)
    except knobs.KnobError as e:
        raise ParamError("%s: param_str key '%s' %s" % (layer, e.key, e))
    return out


def _under_caffe_binary():
    """True inside the `caffe` tool (embedded Python), False under a python interpreter."""
    import os
    try:
        exe = os.path.basename(os.readlink("/proc/self/exe"))
    except OSError:
        return False
    return not exe.startswith("python")


def report_errors(method):
    """Decorator for a Python layer's setup/reshape/forward/backward: under the ``caffe`` binary a Python
    exception aborts the process with only ``boost::python::error_already_set`` on the
    screen, so print the layer's own message to stderr first. Under pycaffe the exception
    propagates unchanged (and is not printed twice)."""
    import functools
    import sys

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except Exception as e:
            if _under_caffe_binary():
                sys.stderr.write("\nERROR in Python layer %s.%s: %s: %s\n"
                                 % (type(self).__name__, method.__name__, type(e).__name__, e))
                sys.stderr.flush()
            raise
    return wrapper
