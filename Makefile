# facelearn: `make test` and `make train` work on a fresh clone (they create .venv and install what they need).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU installs take the local torch CPU wheel (see constraints-cpu.txt); GPU users: make install CONSTRAINTS=
CONSTRAINTS ?= -c constraints-cpu.txt
STAMP := $(VENV)/.installed

.PHONY: install train test test-all clean

$(STAMP): pyproject.toml constraints-cpu.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(CONSTRAINTS) -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# The default experiment: Semi-Siamese Training on shallow synthetic data (CPU, about 2 minutes on 2 cores).
# Extra overrides: make train ARGS="head=arcface"
train: $(STAMP)
	$(PY) -m facelearn.train +experiment=sst_shallow $(ARGS)

# The fast suite (slow tests excluded), one pytest worker per core (pytest-xdist; each worker and the processes it
# starts use one torch thread: tests/conftest.py). Serial: make test TEST_WORKERS=0
TEST_WORKERS ?= auto
test: $(STAMP)
	$(PY) -m pytest -m "not slow" -q -n $(TEST_WORKERS) --dist worksteal $(ARGS)

test-all: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal $(ARGS)

clean:
	rm -rf $(VENV) logs .cache .pytest_cache
