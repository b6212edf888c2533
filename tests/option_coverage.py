"""Which command-line options and param_str keys does some test turn on? (issue 32)

Lists every option of every entry point under tools/, data_prep/ and bench/ (read from the
script's own argparse parser, subcommands included) and every param_str key of the Caffe Python
layers in python_layers/ (declared in ltc/knobs.py), and marks each one that a test
file turns on:

* an option counts as exercised when a test file that names the script (``tools/analyze.py``, or
  ``"tools", "analyze.py"``) also holds the option as a token (``--fit-source``), and, for a
  subcommand's option, the subcommand's name in quotes;
* a param_str key counts when a test file that names the layer's module or class, or an ltc module
  that writes the layer into the nets it builds (ltc/transfer_nets.py for the VOC layers), also holds
  the key in quotes (``"partner"``, ``\\"partner\\"``) or as a keyword (``partner=``).

This is a static read of the tests (it runs none of them): an option named in a test that only
checks its refusal counts as exercised, and one reached only through a library call that the
test makes directly (``nets.render(dict(warmup=...))``) does not. Positional arguments are not
listed (a test that runs the script at all gives them). A script that no test names at all is
listed with the option ``(script)``.

    python tests/option_coverage.py              # the table (markdown), then the never-exercised list
    python tests/option_coverage.py --missing    # only the never-exercised list, one per line
    python tests/option_coverage.py --write      # record that list in tests/option_coverage_gaps.txt

tests/test_option_coverage.py fails when an option or key is neither exercised nor recorded in
tests/option_coverage_gaps.txt, so a new option arrives with a test (or is recorded as a gap).
"""
import argparse
import ast
import glob
import importlib.util
import io
import os
import re
import sys
from contextlib import redirect_stderr, redirect_stdout

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENTRY_DIRS = ("tools", "data_prep", "bench")
GAPS_FILE = os.path.join(REPO, "tests", "option_coverage_gaps.txt")


class _Captured(Exception):
    def __init__(self, parser):
        Exception.__init__(self)
        self.parser = parser


def _load(rel):
    name = "optcov_" + os.path.splitext(rel)[0].replace("/", "_")
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, rel))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _parser_of(rel):
    """The argparse parser that ``main()`` of the script builds (captured at parse_args), or None."""
    original = argparse.ArgumentParser.parse_args

    def capture(self, *a, **k):
        raise _Captured(self)

    argparse.ArgumentParser.parse_args = capture
    try:
        with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
            module = _load(rel)
            if not hasattr(module, "main"):
                return None
            module.main([])
    except _Captured as c:
        return c.parser
    except BaseException:
        return None
    finally:
        argparse.ArgumentParser.parse_args = original
    return None


def _options_of_parser(parser):
    """[(subcommand or "", option string)] of a parser: the long form of every optional argument."""
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, p in action.choices.items():
                out += [(sub, opt) for _, opt in _options_of_parser(p)]
        elif action.option_strings and not isinstance(action, argparse._HelpAction):
            longs = [o for o in action.option_strings if o.startswith("--")]
            out.append(("", (longs or action.option_strings)[0]))
    return out


def _options_by_ast(path):
    """Fallback when the script cannot be imported here: the literal option strings of its
    add_argument calls (options made in loops are missed)."""
    with open(path) as f:
        tree = ast.parse(f.read())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument":
            strs = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
            opts = [s for s in strs if s.startswith("-")]
            if opts:
                longs = [o for o in opts if o.startswith("--")]
                out.append(("", (longs or opts)[0]))
    return out


def entry_points():
    return sorted(os.path.relpath(p, REPO) for d in ENTRY_DIRS for p in glob.glob(os.path.join(REPO, d, "*.py"))
                  if "def main" in open(p).read())


def script_options(rel):
    parser = _parser_of(rel)
    if parser is not None:
        return _options_of_parser(parser), "parser"
    return _options_by_ast(os.path.join(REPO, rel)), "ast"


def _spec_dicts(path):
    """{table name: [keys]} of the module-level dicts whose values are all (default, type) pairs."""
    with open(path) as f:
        tree = ast.parse(f.read())
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict) and node.value.keys:
            d = node.value
            if all(isinstance(k, ast.Constant) and isinstance(k.value, str) for k in d.keys) and \
                    all(isinstance(v, ast.Tuple) and len(v.elts) == 2 for v in d.values):
                out[node.targets[0].id] = [k.value for k in d.keys]
    return out


def layer_keys():
    """[(module, layer classes, key)] for every python_layers module: the keys declared for it in
    ltc/knobs.py (LAYERS), and those of a module-level {key: (default, type)} table of a module
    not declared there."""
    from ltc import knobs
    declared = {}
    for layer in knobs.LAYERS:
        keys = declared.setdefault(layer.module, [])
        keys += [k for k in layer.keys() if k not in keys]
    rows = []
    for path in sorted(glob.glob(os.path.join(REPO, "python_layers", "*.py"))):
        module = os.path.splitext(os.path.basename(path))[0]
        with open(path) as f:
            tree = ast.parse(f.read())
        classes = [n.name for n in tree.body if isinstance(n, ast.ClassDef)]
        keys = list(declared.get(module, []))
        for ks in _spec_dicts(path).values():
            keys += [k for k in ks if k not in keys]
        rows += [(module, classes, k) for k in keys]
    return rows


def writers_of(module):
    """The ltc modules that put layer ``module`` into a net they build (they name it in quotes): a
    test that builds its nets through them (ltc.table1 runs ltc.transfer_nets' VOC nets) sets the keys
    there."""
    out = []
    for p in sorted(glob.glob(os.path.join(REPO, "ltc", "*.py"))):
        with open(p) as f:
            if re.search(r"""module\s*[=:]\s*\\*["']%s\\*["']""" % re.escape(module), f.read()):
                out.append(os.path.splitext(os.path.basename(p))[0])
    return out


def _test_texts(exclude=(), tests_dir=None):
    out = {}
    for p in sorted(glob.glob(os.path.join(tests_dir or os.path.join(REPO, "tests"), "test_*.py"))):
        if os.path.basename(p) in exclude:
            continue
        with open(p) as f:
            out[os.path.join("tests", os.path.basename(p))] = f.read()
    return out


def _names_script(text, rel):
    folder, base = os.path.split(rel)
    return re.search(re.escape(folder) + r"\W{1,6}" + re.escape(base), text) is not None


def _has_option(text, opt):
    return re.search(r"(?<![\w-])" + re.escape(opt) + r"(?![\w-])", text) is not None


def _has_key(text, key):
    return re.search(r"""\\*["']%s\\*["']|(?<![\w.])%s=(?!=)""" % (re.escape(key), re.escape(key)), text) is not None


def coverage(exclude=(), tests_dir=None):
    """[(kind, where, item, [test files])]: kind "option" (where = script[ subcommand]) or "key"
    (where = python_layers module)."""
    texts = _test_texts(exclude, tests_dir)
    rows = []
    for rel in entry_points():
        naming = {t: s for t, s in texts.items() if _names_script(s, rel)}
        if not naming:
            rows.append(("option", rel, "(script)", []))
        opts, _ = script_options(rel)
        for sub, opt in opts:
            where = rel + (" " + sub if sub else "")
            hits = [t for t, s in naming.items() if _has_option(s, opt)
                    and (not sub or re.search(r"""["']%s["']""" % re.escape(sub), s))]
            rows.append(("option", where, opt, hits))
    for module, classes, key in layer_keys():
        names = [module] + classes + writers_of(module)
        naming = {t: s for t, s in texts.items() if any(re.search(r"\b%s\b" % re.escape(n), s) for n in names)}
        rows.append(("key", "python_layers/%s.py" % module, key, [t for t, s in naming.items() if _has_key(s, key)]))
    return rows


def gap_lines(rows):
    return ["%s %s" % (where, item) for kind, where, item, hits in rows if not hits]


def read_gaps(path=GAPS_FILE):
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return [ln.rstrip("\n") for ln in f if ln.strip() and not ln.startswith("#")]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--missing", action="store_true", help="print only the options and keys no test turns on")
    ap.add_argument("--write", action="store_true", help="record the never-exercised list in %s" % GAPS_FILE)
    ap.add_argument("--exclude", nargs="+", default=[], metavar="TEST_FILE",
                    help="leave these test files (base names) out, e.g. to list the gaps before they were added")
    ap.add_argument("--tests-dir", default=None,
                    help="read the test files from this folder instead of tests/ (e.g. an older commit's, from "
                         "git archive), against this tree's scripts")
    a = ap.parse_args(argv)
    os.environ.setdefault("GLOG_minloglevel", "2")
    rows = coverage(a.exclude, a.tests_dir)
    gaps = gap_lines(rows)
    if a.write:
        with open(GAPS_FILE, "w") as f:
            f.write("# Options and param_str keys that no test turns on (python tests/option_coverage.py --write).\n"
                    "# tests/test_option_coverage.py fails on one that is neither tested nor listed here.\n")
            f.write("".join(g + "\n" for g in gaps))
        print("wrote %d lines to %s" % (len(gaps), GAPS_FILE))
        return 0
    if not a.missing:
        print("| where | option / key | tests that turn it on |\n|---|---|---|")
        for kind, where, item, hits in rows:
            print("| %s | %s | %s |" % (where, item, ", ".join(os.path.basename(h) for h in hits) or "**none**"))
        n_opt = sum(r[0] == "option" for r in rows)
        print("\n%d options (%d never exercised), %d param_str keys (%d never exercised)\n"
              % (n_opt, sum(1 for r in rows if r[0] == "option" and not r[3]),
                 len(rows) - n_opt, sum(1 for r in rows if r[0] == "key" and not r[3])))
    print("\n".join(gaps))
    return 0


if __name__ == "__main__":
    sys.exit(main())
