# The course's commands. Each target sets up .venv/ from the pinned requirements first.
#   make test   unit tests, every chapter in smoke mode (papermill, parallel), strict site build,
#               offline check of the built site in headless Chromium
#   make book   every chapter in full mode, then the strict site build into _build/html
#   make serve  serve _build/html on http://127.0.0.1:8000
#   make bench  benchmarks of the companion kernels -> benchmarks/results/cpu.json
#   make bench-gpu  on a CUDA machine: CuPy tests + GPU rows -> benchmarks/results/gpu.json

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
JOBS   ?= 2
PYTEST := $(BIN)/python -m pytest -p no:cacheprovider

.PHONY: setup test unit notebooks site site-check book serve bench bench-tiny bench-gpu clean

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

test: setup
	$(MAKE) --no-print-directory unit notebooks site site-check
	@echo "make test: all stages passed"

unit: setup
	$(PYTEST) -n $(JOBS) --doctest-modules companion tests/unit

notebooks: setup
	$(PYTEST) -n $(JOBS) tests/notebooks

site: setup
	$(BIN)/python tools/build_site.py --mode smoke --reuse

site-check: setup
	COMPANION_REQUIRE_SITE=1 $(PYTEST) tests/site

book: setup
	$(BIN)/python tools/build_site.py --mode full --jobs $(JOBS)

serve:
	$(BIN)/python -m http.server --directory _build/html --bind 127.0.0.1 8000

bench: setup
	$(BIN)/python benchmarks/run.py

bench-tiny: setup
	$(BIN)/python benchmarks/run.py --tiny

# uses the machine's own python3 (torch, CuPy); nothing is installed
bench-gpu:
	bash benchmarks/gpu_check.sh

clean:
	rm -rf _build
