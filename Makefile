# Two commands for a fresh machine (see README.md):
#   make book   create .venv, install everything pinned, build the HTML book
#   make test   the same set-up, then pytest, nbval over every notebook, a book build with
#               warnings as errors and checks of the built HTML
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# Trained base models are cached inside the checkout, so a test run is self-contained.
export NLPRUNE_CACHE ?= $(CURDIR)/.cache/nlprune
# tensorflow-model-optimization 0.8.1 needs Keras 2 (tf-keras), chosen before TF is imported.
export TF_USE_LEGACY_KERAS := 1
export TF_CPP_MIN_LOG_LEVEL := 2
export PYTHONHASHSEED := 0
# How long idle OpenMP threads of torch spin before they sleep (libgomp, Linux). Measured here on
# 2 cores, ms per training step of the review LSTM, idle / beside two busy loops:
#   default (300,000 spins) 32 / 134 (and a starved kernel: a notebook did not finish in 400 s);
#   OMP_WAIT_POLICY=PASSIVE (0 spins) 61 / 43;   GOMP_SPINCOUNT=10000 25 / 83.
# 10,000 spins is the fastest on an idle machine and keeps a busy one usable; every Jupyter
# kernel the targets start inherits it. (macOS builds of torch use LLVM's libomp, which ignores it.)
export GOMP_SPINCOUNT ?= 10000
# How many notebooks `make notebooks` runs at once (pytest-xdist).
WORKERS ?= 2

.PHONY: install book test unit notebooks html check-html check-browser execute bench labs grade clean

install: $(STAMP)

$(STAMP): requirements.txt requirements-nodeps.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -r requirements.txt
	$(BIN)/pip install --no-deps -r requirements-nodeps.txt
	$(BIN)/pip install --no-deps -e .
	touch $@

book: html
	@echo
	@echo "The book is built. Open this file in a browser:"
	@echo "  $(CURDIR)/_build/html/index.html"

html: $(STAMP)
	$(BIN)/jupyter-book build --all --warningiserror --keep-going .

# Checks of the built HTML: offline (no outside host), no raw TeX, no test plumbing or
# warnings in the text, every internal link and anchor resolves, every image has alt text.
check-html: html
	$(BIN)/python -m pytest tests/html

# Every page in headless Chromium with the network blocked, at 1280 px and 390 px: no console
# errors, maths typeset, the phone menu opens. Skipped with a message where no Chromium is installed.
check-browser: html
	$(BIN)/python tools/check_browser.py

# Unit tests and the docstring examples of nlprune (doctests). (Two workers here measured 133 s
# against 128-154 s for one: the labs test, 107 s in one file, is the long pole.)
UNIT_PATHS := --ignore=tests/html tests src/nlprune
unit: $(STAMP)
	$(BIN)/python -m pytest $(UNIT_PATHS)

# Without progress bars, as when the outputs were stored (the bars' widget messages flood the
# kernel's output channel). nbval's limits are set on purpose: a cell may run 20 minutes on a
# busy machine, a kernel may take 3 minutes to start, and conftest.py lets a cell's output
# arrive up to 2 minutes after the kernel's reply (nbval's fixed default is 5 s).
# Two notebooks run at once (pytest-xdist, a whole notebook per worker), each kernel on one
# thread of torch (NLPRUNE_THREADS, see nlprune.train.reproducible) and of TensorFlow. Measured
# on 2 cores: chapters 3 and 4 side by side on one thread each took 158 s, one after the other on
# two threads each 282 s. The longest start first (conftest.py). WORKERS=1 runs them one at a time.
POOL := NLPRUNE_PROGRESS=0 NLPRUNE_THREADS=1 TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1 \
	$(BIN)/python -m pytest -n $(WORKERS) --dist loadfile --no-loadscope-reorder
NBVAL_FLAGS := --nbval-lax --nbval-current-env --nbval-cell-timeout=1200 --nbval-kernel-startup-timeout=180
notebooks: $(STAMP)
	$(POOL) $(NBVAL_FLAGS) notebooks

# The unit tests join the notebooks' pool, after them: they fill the minutes in which one worker
# would wait for the other's last notebook. Measured on a fresh clone: 1,572 s for both, against
# 163 s + 1,642 s one after the other (later runs of the same work: 1,835 s and 1,862 s, this
# machine's speed varies). With nlprune 0.2, whose RNN classifier trains twice as fast, the pool
# took 1,172 s and 1,312 s, and the whole `make test` on a fresh clone, installation included,
# 1,292 s and 1,438 s in two runs.
test: $(STAMP)
	$(POOL) $(NBVAL_FLAGS) $(UNIT_PATHS) notebooks
	$(MAKE) check-html

# For authors: run every notebook top to bottom and store its outputs (without progress bars),
# then drop TensorFlow's start-up messages from the cells tagged remove-stderr. A timing claim of
# the text that fails here is an error (NLPRUNE_STRICT_TIMING, nlprune.measure.check_timing).
execute: $(STAMP)
	cd notebooks && for nb in *.ipynb; do \
	  NLPRUNE_PROGRESS=0 NLPRUNE_STRICT_TIMING=1 ../$(BIN)/jupyter execute --inplace --timeout=600 "$$nb" || exit 1; done
	$(BIN)/python tools/drop_startup_noise.py notebooks/*.ipynb

# Run times of every notebook from an empty model cache and with a warm one, against the budgets
# (3 min per notebook, 20 min for the course). Writes book/_generated/bench.md for the
# reproducibility appendix; exits non-zero when a budget is exceeded. Never part of `make test`.
bench: $(STAMP)
	$(BIN)/python tools/bench.py

# The classroom kit (tools/labs.py, nbgrader): one student lab per chapter of the table of
# contents, written to $(LABS); and the grading of a folder of completed labs,
# SUBMISSIONS/<student>/<lab>.ipynb, to $(GRADES)/grades.csv (per check) and summary.csv.
LABS   ?= _build/labs
GRADES ?= _build/grades
labs: $(STAMP)
	$(BIN)/python tools/labs.py build $(LABS)

grade: $(STAMP)
	@test -n "$(SUBMISSIONS)" || { echo "usage: make grade SUBMISSIONS=folder-of-student-folders"; exit 2; }
	$(BIN)/python tools/labs.py grade $(SUBMISSIONS) $(GRADES)

clean:
	rm -rf _build .cache
