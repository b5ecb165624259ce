# Two commands do all the set-up on a fresh machine:
#   make run    create the environment, install, execute every notebook at the quick preset, build the report
#               (a Jupyter Book with the scoreboard: open report/index.html)
#   make test   create the environment, install, lint, run the whole test suite (what CI runs)
# and one for local work:
#   make test-fast   lint and the unit tests only: no notebooks, no slow runs, no browser (a minute or two)
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
NB ?=
REPORT ?= report

.PHONY: run test test-fast lint env browser notebooks bench spread app lab clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first and pinned: an open range can pull a multi-GB CUDA build
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[dev]"
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

env: $(VENV)/.installed

# Debian's Chromium for the browser tests (never `playwright install`)
browser:
	@command -v chromium >/dev/null || { apt-get update -q && apt-get install -y -q chromium chromium-driver; }

run: env
	$(VENV)/bin/labkit report --execute --out $(REPORT)

# a test that hangs fails after PYTEST_TIMEOUT seconds instead of blocking the run (a notebook cell after 600 s)
PYTEST_TIMEOUT ?= 900

lint: env
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: env browser lint
	$(PY) -m pytest tests --nbval-lax notebooks -p no:cacheprovider -q \
	  --timeout=$(PYTEST_TIMEOUT) --nbval-cell-timeout=600

test-fast: env lint
	$(PY) -m pytest tests -m "not slow and not browser" -p no:cacheprovider -q --timeout=300

# each notebook: .py -> .ipynb (--update keeps the cell ids: a rebuild changes only what ran), then all executed in
# place by papermill from one Python process (labkit.batch; JOBS=2 runs two at a time), each saved with its .py
# twin through Jupytext as JupyterLab saves it (labkit.cli.strip_widget_state), its figures as images (kaleido in
# Debian's Chromium), so that opening a committed notebook in JupyterLab, scrolling or hovering changes nothing
JOBS ?= 1
notebooks: env browser
	@nbs=""; for src in $$(ls notebooks/[0-9][0-9]_*.py notebooks/index.py | grep -- "$(NB)"); do \
	  nb=$${src%.py}.ipynb; nbs="$$nbs $$nb"; \
	  $(VENV)/bin/jupytext --quiet --update --set-kernel python3 --to ipynb --output $$nb $$src || exit 1; \
	done; \
	LABKIT_PROGRESS=0 $(PY) -m labkit.batch --jobs $(JOBS) --in-place $$nbs

# BENCHMARKS.md: every section but --memory (long); one section: make bench BENCH="--imports --overhead";
# the standard presets' peak memory: make bench BENCH="--memory rpo dual_rl"; see benchmarks/bench.py
BENCH ?=
bench: env
	$(PY) benchmarks/bench.py $(BENCH)

# how far each method's quick numbers move across torch CPU kernels and thread counts (see BENCHMARKS.md)
spread: env
	$(PY) benchmarks/spread.py

# on 127.0.0.1 only; `labkit dashboard --address 0.0.0.0` to serve other machines
app: env
	$(VENV)/bin/labkit dashboard --show

# from the repository root, so that Jupytext finds jupytext.toml and keeps each .ipynb paired with its .py
lab: env
	$(VENV)/bin/jupyter lab --ServerApp.root_dir=$(CURDIR) --LabApp.default_url=/lab/tree/notebooks/index.ipynb

clean:
	rm -rf $(REPORT) runs .pytest_cache
