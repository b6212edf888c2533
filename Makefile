# learning-to-count: the commands the README names.
#   make setup   build (or reuse the cached) Caffe and the .venv        (= ./setup.sh)
#   make demo    build the bundled sample LMDBs if missing, then train the CPU demo
#   make test    set up if the environment is missing, then run the test suite
#   make data    the embedded sample photos and the Fashion-MNIST counting scenes
#   make extras  optional: PyTorch (CPU build), onnx, onnxruntime for tools/export.py and its tests
#   make train SOLVER=prototxt/solver.prototxt
#                a long run: resume from the newest intact snapshot (tools/resume.py), or start;
#                Ctrl-C snapshots and stops, run `make train` again to continue
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
CAFFE := $(VENV)/bin/caffe
PYTEST_ARGS ?=
# Training speed (bench/train_step.py): some machines preset OPENBLAS_CORETYPE=Haswell, which
# keeps OpenBLAS off its AVX-512 kernels; on an AVX-512 CPU the demo drops that preset.
CAFFE_ENV := $(if $(shell grep -m1 -o avx512f /proc/cpuinfo 2>/dev/null),env -u OPENBLAS_CORETYPE,)

SOLVER ?= prototxt/solver.prototxt
TRAIN_LOG ?= runs/$(notdir $(patsubst %/,%,$(dir $(SOLVER)))).train.log

.PHONY: setup demo test data sample fashion clean-demo train extras

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

data: sample fashion

demo: sample
	mkdir -p runs/demo
	set -o pipefail; $(CAFFE_ENV) $(CAFFE) train -solver prototxt/demo/solver.prototxt 2>&1 | tee runs/demo/train.log

# -c requirements.txt keeps the core pins (protobuf 4.25.9 for Caffe's generated code); torch is
# pinned to its +cpu build, so pip fails rather than fetch a CUDA build with GBs of libraries.
extras: $(CAFFE)
	$(VENV)/bin/pip install -q --disable-pip-version-check -c requirements.txt -r requirements-extras.txt

# tee ignores SIGINT/SIGHUP so that caffe can finish its snapshot after a Ctrl-C or a hangup.
train: $(CAFFE)
	mkdir -p $(dir $(TRAIN_LOG))
	set -o pipefail; $(CAFFE_ENV) $(PY) tools/resume.py --solver $(SOLVER) --new-ok 2>&1 | (trap '' INT HUP; exec tee -a $(TRAIN_LOG))

test: $(CAFFE)
	$(PY) -m pytest tests -q $(PYTEST_ARGS)

clean-demo:
	rm -rf runs/demo
