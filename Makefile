# The two set-up commands: `make run` and `make test`. Each creates .venv when missing and installs
# torch first (CPU wheel by default; e.g. `make run TORCH_SPEC="torch==2.11.0"` on a GPU box), so
# that no other package can pull in a different torch build.

PYTHON     ?= python3
VENV       ?= .venv
TORCH_SPEC ?= torch==2.13.0
CONFIG     ?= configs/default.yaml
PYTEST_ARGS ?=

PY  := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
export HF_HUB_OFFLINE ?= 1
export GRADIO_ANALYTICS_ENABLED ?= False

.PHONY: run test install install-dev lint clean help

help:
	@echo "make run    create .venv, install, run the main job on the built-in data ($(CONFIG))"
	@echo "make test   create .venv, install dev deps, run make lint (ruff check + format check) and the fast test suite"
	@echo "make lint   ruff check and ruff format --check"

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.torch: | $(PY)
	$(PIP) install -q "$(TORCH_SPEC)"
	@touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.torch
	$(PIP) install -q -e '.[demo,plot]'
	@touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.torch
	$(PIP) install -q -e '.[demo,plot,dev]'
	@touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

run: install
	$(VENV)/bin/musicdistill run $(CONFIG)

LINTED := musicdistill tests bench demo scripts

lint: install-dev
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(LINTED)

test: lint
	$(VENV)/bin/pytest -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache
