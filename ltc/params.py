"""Strict JSON param_str parsing shared by the project's Python layers.

Every layer declares its keys with a default and a type; ``parse_params`` rejects
unknown keys, wrong types and malformed JSON with a message that names the layer
and says what to fix. No eval, no YAML.

    KEYS = {"M": (10.0, float), "workers": (2, int)}
    p = parse_params(param_str, KEYS, "CountingLossLayer")
    p["M"]  -> 10.0

It also holds the counting data layer's defaults, once: the layer, the batch pipeline, the
net generator, the analyses and the tools all read them from here.
"""
import json
import math

# The counting data layer's defaults (docs/design.md says why each is what it is).
CROP_SIZE = 228             # random crop of the 256 x 256 image; the six inputs are crop / 2
INTERPOLATION = "per_batch" # D's OpenCV method: one random draw among the four per batch
GRAY_PROB = 0.67            # the paper: grayscale inputs 67% of the time
SEED = 1701                 # data and solver seed


class ParamError(ValueError):
    """A layer's param_str is wrong; the message says which key and why."""


_TYPE_NAMES = {float: "a number", int: "an integer", str: "a string", bool: "true/false",
               list: "a list", dict: "an object"}


class IntOr:
    """A type spec: an integer, or one of the literal strings given (``IntOr("auto")``)."""

    def __init__(self, *words):
        self.words = words

    def __repr__(self):
        return "an integer or %s" % " or ".join(repr(w) for w in self.words)


def _coerce(layer, key, value, typ):
    if isinstance(typ, IntOr):
        if (isinstance(value, int) and not isinstance(value, bool)) or value in typ.words:
            return value
        raise ParamError("%s: param_str key '%s' must be %r, got %r (%s)"
                         % (layer, key, typ, value, type(value).__name__))
    if typ is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ParamError("%s: param_str key '%s' must be a finite number, got %r" % (layer, key, value))
        return float(value)
    if typ is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if typ in (str, bool, list, dict) and isinstance(value, typ):
        return value
    if isinstance(typ, tuple):  # a choice among literal values
        if value in typ:
            return value
        raise ParamError("%s: param_str key '%s' must be one of %s, got %r"
                         % (layer, key, ", ".join(repr(t) for t in typ), value))
    raise ParamError("%s: param_str key '%s' must be %s, got %r (%s)"
                     % (layer, key, _TYPE_NAMES.get(typ, typ), value, type(value).__name__))


def parse_params(param_str, spec, layer="layer", required=()):
    """Parse ``param_str`` (JSON object or empty) against ``spec``.

    spec: {key: (default, type)} where type is float/int/str/bool/list/dict or a
    tuple of allowed literal values. Keys in ``required`` must be present.
    Returns a dict with every key of spec.
    """
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
    missing = [k for k in required if k not in given]
    if missing:
        raise ParamError("%s: param_str is missing required key(s) %s" % (layer, ", ".join(repr(k) for k in missing)))
    out = {}
    for key, (default, typ) in spec.items():
        out[key] = _coerce(layer, key, given[key], typ) if key in given else default
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
