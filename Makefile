# Two commands on a fresh machine:
#   make demo   set up .venv, build pinngs._C, simulate a study (stenosis70-4view), reconstruct it,
#               evaluate it against the truth and write the report        -> out/demo/
#   make test   set up .venv, build, compile-check the CUDA sources, run the test suite
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.pinngs-installed
NVCC   ?= $(shell command -v nvcc 2>/dev/null)

.PHONY: setup demo render-demo test test-slow check-cuda bench bench-quick bench-simulate bench-reconstruct bench-flow bench-online bench-cfd bench-cfd-quick clean
DEMO_PRESET ?= stenosis70-4view

setup: $(STAMP)

$(STAMP): setup.py requirements.txt $(wildcard csrc/*)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# pinned CPU torch first (a wheel on local disk here); everything else installs against it
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-build-isolation -e .
	$(PY) -c "import pinngs._C"
	touch $@

demo: $(STAMP)
	$(VENV)/bin/pinngs simulate $(DEMO_PRESET) -o out/demo/study --seed 0 --overwrite
	$(VENV)/bin/pinngs reconstruct out/demo/study -o out/demo/recon --overwrite
	$(VENV)/bin/pinngs evaluate out/demo/recon --truth out/demo/study/truth -o out/demo/evaluation.json
	@echo "report: out/demo/recon/report.md (+ report.png); study preview: out/demo/study/preview.png"

# the rasterizer alone: render the built-in Gaussian scene
render-demo: $(STAMP)
	$(VENV)/bin/pinngs demo -o out/render-demo --overwrite

# every .cu is free of torch headers, so nvcc checks it in ~1 s without a GPU
check-cuda:
ifeq ($(NVCC),)
	@echo "nvcc not found: CUDA sources not compile-checked"
else
	@set -e; for f in csrc/*.cu; do \
	  echo "nvcc -c $$f"; $(NVCC) -c -std=c++17 -arch=sm_90 -DPINNGS_WITH_CUDA -Icsrc -o /dev/null $$f; done
endif

test: $(STAMP) check-cuda
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

bench: $(STAMP)
	$(PY) -m benchmarks.bench_rasterizer

bench-quick: $(STAMP)
	$(PY) -m benchmarks.bench_rasterizer --quick

bench-simulate: $(STAMP)
	$(PY) -m benchmarks.bench_simulate

bench-reconstruct: $(STAMP)
	$(PY) -m benchmarks.bench_reconstruct

# simulates and reconstructs (--flow reduced: the lumen is what it uses) into benchmarks/.cache where missing
bench-flow: $(STAMP)
	$(PY) -m benchmarks.bench_flow

bench-online: $(STAMP)
	$(PY) -m benchmarks.bench_online

# CFD comparison (issue 6): references (analytic / scikit-fem with mesh convergence), pinngs on
# simulated DSA at 2 and 4 views, Young-Tsai -> benchmarks/results/cfd/ (quick: results/cfd/quick/)
bench-cfd-quick: $(STAMP)
	$(PY) -m benchmarks.cfd.run --quick

bench-cfd: $(STAMP)
	$(PY) -m benchmarks.cfd.run --full

clean:
	rm -rf build *.egg-info pinngs/_C*.so out
