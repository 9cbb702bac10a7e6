# bmstudy: the two promised commands are `make study` and `make test` (see README).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
RUN    ?= default
PROFILE ?= cpu
# The default study runs on the top-level data_manifest.csv, whose files `bmstudy synth` generates
# under data/synthetic (profile default, seed 0). MANIFEST= (empty) lets stage 01 synthesise a cohort
# sized for PROFILE inside the run folder instead (e.g. `make study PROFILE=tiny MANIFEST=`).
MANIFEST ?= data_manifest.csv
# Test worker processes (pytest-xdist). The slow tests are TensorFlow trainings in subprocesses whose
# graph building is mostly single-threaded, so 2 workers on 2 cores took the suite from 19.6 to 11.6 min.
TEST_WORKERS ?= 2

.PHONY: setup study test test-fast book clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, alone: an exact pin takes the CPU wheel where one is provided (see README)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

## study: set up, generate the default synthetic cohort and run the whole study, then build the book
study: setup
ifeq ($(MANIFEST),data_manifest.csv)
	$(BIN)/bmstudy synth --out data/synthetic --profile default --seed 0 --preview
endif
	$(BIN)/bmstudy run --name $(RUN) --profile $(PROFILE) $(if $(MANIFEST),--manifest $(MANIFEST))

## test: set up and run the test suite (tests needing ../shared/data or a GPU skip with a reason)
test: setup
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal

test-fast: setup
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal -m "not slow"

clean:
	rm -rf $(VENV) runs data book/_build
