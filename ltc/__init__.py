"""learning-to-count: the library behind the command-line tools, data preparation
scripts, benchmarks and Caffe Python layers of this package.

Every piece of logic lives here once; ``tools/``, ``data_prep/`` and ``bench/`` are
thin command-line entry points (the benchmarks share their own toolkit, bench/benchlib.py)
and ``python_layers/`` holds only the Caffe layer shells that the prototxts name. Nothing in this package has import-time side effects.
"""

import os

# The repository root: default data/, prototxt/ and runs/ locations are relative to it.
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
