# Two commands do all the set-up on a fresh machine:
#   make run    create the environment, install, execute every notebook at the quick preset, write the HTML report
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

notebooks: env
	@for src in $$(ls notebooks/[0-9][0-9]_*.py notebooks/index.py | grep -- "$(NB)"); do \
	  nb=$${src%.py}.ipynb; echo "== $$nb"; \
	  $(VENV)/bin/jupytext --quiet --set-kernel python3 --to ipynb --output $$nb $$src || exit 1; \
	  LABKIT_PROGRESS=0 $(VENV)/bin/papermill --log-level WARNING --no-progress-bar -k python3 --cwd notebooks $$nb $$nb || exit 1; \
	  $(PY) -c "import sys; from labkit.cli import strip_widget_state; strip_widget_state(sys.argv[1])" $$nb; \
	done

bench: env
	$(PY) benchmarks/bench.py

# how far each method's quick numbers move across torch CPU kernels and thread counts (see BENCHMARKS.md)
spread: env
	$(PY) benchmarks/spread.py

# on 127.0.0.1 only; `labkit dashboard --address 0.0.0.0` to serve other machines
app: env
	$(VENV)/bin/labkit dashboard --show

lab: env
	$(VENV)/bin/jupyter lab notebooks

clean:
	rm -rf $(REPORT) runs .pytest_cache
