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
# How long torch's idle OpenMP threads spin before they sleep (libgomp): 10,000 spins is the
# fastest on an idle machine and keeps a busy one usable, where the default (300,000) can starve
# a kernel (measured in book/reproducibility.md). Every kernel the targets start inherits it;
# macOS builds of torch use LLVM's libomp, which ignores it.
export GOMP_SPINCOUNT ?= 10000
# How many notebooks `make notebooks` runs at once (pytest-xdist).
WORKERS ?= 2

.PHONY: install book test unit notebooks durations html check-html check-browser execute bench labs grade student-book slides check-slides clean

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
# errors, maths typeset, the menu button works, nothing wider than the column. Playwright drives
# the installed Chromium (nothing downloaded); skipped with a message where there is none.
check-browser: html
	$(BIN)/python -m tools.check_browser

# Unit tests and the docstring examples of nlprune (doctests), in one process: the labs test, the
# longest file, takes most of the time, so workers would not shorten it.
UNIT_PATHS := --ignore=tests/html tests src/nlprune
unit: $(STAMP)
	$(BIN)/python -m pytest $(UNIT_PATHS)

# Without progress bars, as when the outputs were stored (the bars' widget messages flood the
# kernel's output channel). nbval's limits are set on purpose: a cell may run 20 minutes on a
# busy machine, a kernel may take 3 minutes to start, and conftest.py lets a cell's output
# arrive up to 2 minutes after the kernel's reply (nbval's fixed default is 5 s).
# Two notebooks run at once (pytest-xdist, a whole notebook per worker), each kernel on one
# thread of torch (NLPRUNE_THREADS, see nlprune.train.reproducible) and of TensorFlow: on two
# cores that is faster than one at a time on two threads, because a small LSTM keeps a second
# thread half idle. The longest start first (conftest.py). WORKERS=1 runs them one at a time.
POOL := NLPRUNE_PROGRESS=0 NLPRUNE_THREADS=1 TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1 \
	$(BIN)/python -m pytest -n $(WORKERS) --dist loadfile --no-loadscope-reorder
NBVAL_FLAGS := --nbval-lax --nbval-current-env --nbval-cell-timeout=1200 --nbval-kernel-startup-timeout=180
notebooks: $(STAMP)
	$(POOL) $(NBVAL_FLAGS) notebooks

# The unit tests join the notebooks' pool, after them: they fill the minutes in which one worker
# would wait for the other's last notebook. The book is built meanwhile, in the background (its
# log in _build/html-build.log, printed when it fails; it reads the notebooks and runs none), and
# its HTML is checked after the pool (check-html's tests).
HTML_LOG := _build/html-build.log
test: $(STAMP)
	@mkdir -p _build; $(MAKE) html > $(HTML_LOG) 2>&1 & build=$$!; \
	$(POOL) $(NBVAL_FLAGS) $(UNIT_PATHS) notebooks; tests=$$?; \
	wait $$build; built=$$?; \
	if [ $$built -ne 0 ]; then tail -n 80 $(HTML_LOG); echo "the book build failed (log: $(HTML_LOG))"; \
	else echo "the book built (log: $(HTML_LOG))"; fi; \
	[ $$tests -eq 0 ] && [ $$built -eq 0 ] && $(BIN)/python -m pytest tests/html

# The pool of `make test`, recording the seconds each file took in tests/durations.json, which
# orders the pool (longest first, conftest.py). Commit the file after a run that passed.
durations: $(STAMP)
	$(POOL) $(NBVAL_FLAGS) --store-durations $(UNIT_PATHS) notebooks

# For authors: run every notebook top to bottom and store its outputs (without progress bars),
# then drop TensorFlow's start-up messages from the cells tagged remove-stderr. A timing claim of
# the text that fails here is an error (NLPRUNE_STRICT_TIMING, nlprune.measure.check_timing).
execute: $(STAMP)
	cd notebooks && for nb in *.ipynb; do \
	  NLPRUNE_PROGRESS=0 NLPRUNE_STRICT_TIMING=1 ../$(BIN)/jupyter execute --inplace --timeout=600 "$$nb" || exit 1; done
	$(BIN)/python -m tools.drop_startup_noise notebooks/*.ipynb

# Run times of every notebook from an empty model cache and with a warm one, against the budgets
# (3 min per notebook, 20 min for the course). Writes book/_generated/bench.md for the
# reproducibility appendix; exits non-zero when a budget is exceeded. Never part of `make test`.
bench: $(STAMP)
	$(BIN)/python -m tools.bench

# The classroom kit (tools.labs, nbgrader): one student lab per chapter of the table of
# contents, written to $(LABS) (the folder to hand out; the teacher's nbgrader course, with the
# solutions and hidden tests, goes beside it to $(LABS)-teacher); and the grading of a folder of
# completed labs, SUBMISSIONS/<student>/<lab>.ipynb, each in a sandbox (tools.grading), to
# $(GRADES)/grades.csv (per check) and summary.csv (a row per student and lab). ROSTER, a file
# of names, adds the students who handed in nothing; HIDDEN, a folder, your own hidden tests;
# DUE (2026-12-10T23:59+01:00) the due date: the summary says who was late. Feedback pages go to
# $(GRADES)/feedback.
LABS   ?= _build/labs
GRADES ?= _build/grades
labs: $(STAMP)
	$(BIN)/python -m tools.labs build $(LABS)

grade: $(STAMP)
	@test -n "$(SUBMISSIONS)" || { echo "usage: make grade SUBMISSIONS=folder-of-student-folders"; exit 2; }
	$(BIN)/python -m tools.labs grade $(SUBMISSIONS) $(GRADES) $(if $(ROSTER),--roster $(ROSTER)) $(if $(HIDDEN),--hidden $(HIDDEN)) $(if $(DUE),--due $(DUE))

# The student edition of the book (tools.student_edition): the lab functions as stubs, no
# exercise solutions; sources in _build/student-src, HTML in _build/student/_build/html.
student-book: $(STAMP)
	$(BIN)/python -m tools.student_edition _build/student-src
	$(BIN)/jupyter-book build --all --warningiserror --keep-going --path-output _build/student _build/student-src
	@echo "The student edition: $(CURDIR)/_build/student/_build/html/index.html"

# One reveal.js deck per session of the teaching guide (tools.slides), offline, in _build/slides;
# check-slides opens each in headless Chromium with the network blocked.
slides: $(STAMP)
	$(BIN)/python -m tools.slides _build/slides

check-slides: slides
	$(BIN)/python -m tools.check_browser --slides _build/slides

clean:
	rm -rf _build .cache
