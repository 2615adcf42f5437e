# Two commands for a fresh machine (see README.md):
#   make book   create .venv, install everything pinned, build the HTML book
#   make test   the same set-up, then pytest, nbval over every notebook, and a book build with
#               warnings as errors
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

.PHONY: install book test unit notebooks execute clean

install: $(STAMP)

$(STAMP): requirements.txt requirements-nodeps.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -r requirements.txt
	$(BIN)/pip install --no-deps -r requirements-nodeps.txt
	$(BIN)/pip install --no-deps -e .
	touch $@

book: $(STAMP)
	$(BIN)/jupyter-book build --all --warningiserror --keep-going .
	@echo
	@echo "The book is built. Open this file in a browser:"
	@echo "  $(CURDIR)/_build/html/index.html"

# Unit tests and the docstring examples of nlprune (doctests).
unit: $(STAMP)
	$(BIN)/python -m pytest tests src/nlprune

# Without progress bars, as when the outputs were stored: the bars' widget messages flood the
# kernel's output channel, and nbval fails a cell whose output arrives more than 5 s late.
notebooks: $(STAMP)
	NLPRUNE_PROGRESS=0 $(BIN)/python -m pytest --nbval-lax --nbval-current-env -p no:cacheprovider notebooks

test: unit notebooks book

# For authors: run every notebook top to bottom and store its outputs (without progress bars).
execute: $(STAMP)
	cd notebooks && for nb in *.ipynb; do \
	  NLPRUNE_PROGRESS=0 ../$(BIN)/jupyter execute --inplace --timeout=600 "$$nb" || exit 1; done

clean:
	rm -rf _build .cache
