# Set-up and checks for zoedepth_ros. Both entry points start from a bare clone:
#   make test   create/reuse .venv from the pinned requirements, then run the test suite
#   make demo   create/reuse .venv, then run the demo
# The venv is rebuilt only when requirements/*.txt, setup.py or setup.cfg change (a sha256 stamp
# inside .venv), so a second run skips pip entirely.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.zoedepth_ros-stamp
STAMP_INPUTS := requirements/runtime.txt requirements/test.txt setup.py setup.cfg

# pip prints one harmless "Location 'file:///opt/...' is ignored" warning per package on this
# machine's configuration: drop those lines, keep everything else (pipefail keeps pip's status).
PIP_QUIET_FILTER := { grep -v -E "^WARNING: Location 'file://[^']*' is ignored" || true; }

# What the tests see: the venv's executables first (zoedepth-ros, colcon).
TEST_ENV := PATH="$(CURDIR)/$(VENV)/bin:$$PATH" PYTHONDONTWRITEBYTECODE=1

.PHONY: help venv test demo demo-model clean-venv

help:
	@echo "make test   set up .venv (pinned requirements) and run the test suite"
	@echo "make demo   set up .venv and run the demo"

venv:
	@want="$$(cat $(STAMP_INPUTS) | sha256sum | cut -d' ' -f1) $$($(PYTHON) -c 'import sys; print(sys.version.split()[0])')"; \
	if [[ -x "$(VPY)" && -f "$(STAMP)" && "$$(cat "$(STAMP)")" == "$$want" ]]; then \
		echo "venv: $(VENV) is up to date with $(STAMP_INPUTS) (pip skipped)"; \
		exit 0; \
	fi; \
	if [[ ! -x "$(VPY)" ]]; then \
		echo "venv: creating $(VENV) with $(PYTHON)"; \
		$(PYTHON) -m venv "$(VENV)"; \
	fi; \
	rm -f "$(STAMP)"; \
	echo "venv: installing requirements/test.txt (first time: several minutes, torch is large)"; \
	"$(VPY)" -m pip install --disable-pip-version-check --progress-bar off -r requirements/test.txt 2>&1 | $(PIP_QUIET_FILTER); \
	echo "venv: installing zoedepth_ros (editable)"; \
	"$(VPY)" -m pip install --disable-pip-version-check --no-deps --no-build-isolation -e . 2>&1 | $(PIP_QUIET_FILTER); \
	echo "$$want" > "$(STAMP)"; \
	echo "venv: ready"

test: venv
	$(TEST_ENV) $(VPY) -m pytest -q test

demo: venv
	ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST $(VENV)/bin/zoedepth-ros demo --out demo_report

# Rebuild the shipped demo model from scratch (docs/demo.md): synthetic bags with the training
# seeds, `zoedepth-ros train` with config/train_demo.yaml then config/train_demo_finetune.yaml,
# the float16 copy into the assets, then the held-out scores.
demo-model: venv
	$(VENV)/bin/python -m zoedepth_ros.demo_model

clean-venv:
	rm -rf "$(VENV)"
