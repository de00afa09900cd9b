# Set-up and checks for zoedepth_ros. The entry points start from a bare clone:
#   make test         create/reuse .venv from the pinned requirements, lint (ruff check, ruff.toml),
#                     then run the test suite
#   make demo         create/reuse .venv, then run the demo
#   make test-jazzy   create/reuse .venv-jazzy (what a Jazzy robot runs: Python 3.12, numpy 1.26,
#                     OpenCV 4.x; requirements/jazzy.txt), then run the test suite in it
# A venv is rebuilt only when its requirements files, setup.py or setup.cfg change (a sha256 stamp
# inside it), so a second run skips pip entirely. pip keeps no cache of its downloads: the two venvs
# take ~13 GB (torch's CUDA build twice), and a cached copy of the wheels would add ~4 GB more;
# .ci/run removes .venv once its tests pass, before it builds .venv-jazzy.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV := .venv
VPY := $(VENV)/bin/python
STAMP_INPUTS := requirements/runtime.txt requirements/robot.txt requirements/engines.txt requirements/test.txt setup.py setup.cfg

# Python 3.12 as on Ubuntu 24.04: `python3.12` on PATH, else pyenv's newest 3.12.
PYTHON_JAZZY ?= $(or $(shell python3.12 -c 'import sys; print(sys.executable)' 2>/dev/null),$(shell v=$$(pyenv whence python3.12 2>/dev/null | tail -n1) && [ -n "$$v" ] && PYENV_VERSION=$$v pyenv which python3.12 2>/dev/null),python3.12)
VENV_JAZZY := .venv-jazzy
JAZZY_STAMP_INPUTS := requirements/jazzy.txt requirements/robot.txt requirements/engines.txt setup.py setup.cfg

# pip prints one harmless "Location 'file:///opt/...' is ignored" warning per package on this
# machine's configuration: drop those lines, keep everything else (pipefail keeps pip's status).
PIP_QUIET_FILTER := { grep -v -E "^WARNING: Location 'file://[^']*' is ignored" || true; }

# What the tests see: the venv's executables first (zoedepth-ros, colcon).
TEST_ENV := PATH="$(CURDIR)/$(VENV)/bin:$$PATH" PYTHONDONTWRITEBYTECODE=1
JAZZY_TEST_ENV := PATH="$(CURDIR)/$(VENV_JAZZY)/bin:$$PATH" PYTHONDONTWRITEBYTECODE=1

.PHONY: help venv venv-jazzy test test-jazzy demo demo-model clean-venv

help:
	@echo "make test         set up .venv (pinned requirements), run ruff, then the test suite"
	@echo "make demo         set up .venv and run the demo"
	@echo "make test-jazzy   set up .venv-jazzy (Python 3.12, numpy 1.26, OpenCV 4.x, as on a Jazzy robot) and run the test suite"

# $(call setup_venv,DIR,PYTHON,REQUIREMENTS FILE,STAMP INPUTS): create DIR with PYTHON unless it
# exists, pip-install the requirements file and the package (editable), unless the stamp says
# that the stamp inputs and the Python version are those of the last successful install.
define setup_venv
want="$$(cat $(4) | sha256sum | cut -d' ' -f1) $$($(2) -c 'import sys; print(sys.version.split()[0])')"; \
if [[ -x "$(1)/bin/python" && -f "$(1)/.zoedepth_ros-stamp" && "$$(cat "$(1)/.zoedepth_ros-stamp")" == "$$want" ]]; then \
	echo "venv: $(1) is up to date with $(4) (pip skipped)"; \
	exit 0; \
fi; \
if [[ ! -x "$(1)/bin/python" ]]; then \
	echo "venv: creating $(1) with $(2)"; \
	$(2) -m venv "$(1)"; \
fi; \
rm -f "$(1)/.zoedepth_ros-stamp"; \
echo "venv: installing $(3) into $(1) (first time: several minutes, torch is large)"; \
"$(1)/bin/python" -m pip install --disable-pip-version-check --no-cache-dir --progress-bar off -r $(3) 2>&1 | $(PIP_QUIET_FILTER); \
echo "venv: installing zoedepth_ros (editable)"; \
"$(1)/bin/python" -m pip install --disable-pip-version-check --no-deps --no-build-isolation -e . 2>&1 | $(PIP_QUIET_FILTER); \
echo "$$want" > "$(1)/.zoedepth_ros-stamp"; \
echo "venv: $(1) ready"
endef

venv:
	@$(call setup_venv,$(VENV),$(PYTHON),requirements/test.txt,$(STAMP_INPUTS))

venv-jazzy:
	@$(call setup_venv,$(VENV_JAZZY),$(PYTHON_JAZZY),requirements/jazzy.txt,$(JAZZY_STAMP_INPUTS))

# The suite in two passes: every test but the `serial` ones on TEST_WORKERS pytest-xdist workers
# (a test file to a worker: its module fixtures are made once; each worker on its own ROS domain,
# test/conftest.py), then the `serial` ones alone: they measure time, rates or latency, which a
# neighbour's load would skew, or take most of the memory (pytest.ini). TEST_MARKS narrows both
# passes, e.g. TEST_MARKS='not slow'.
TEST_WORKERS ?= 2
TEST_MARKS ?=
marks = $(if $(TEST_MARKS),$(1) and ($(TEST_MARKS)),$(1))
define run_suite
	$(1) -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "$(call marks,not serial)" test
	$(1) -m pytest -q -m "$(call marks,serial)" test
endef

# Lint first (ruff.toml; seconds), then the suite. test-jazzy lints nothing: same code, same ruff.
test: venv
	$(VPY) -m ruff check .
	$(call run_suite,$(TEST_ENV) $(VPY))

# The robot's side. First the README's robot command (pip install -r requirements/robot.txt) over
# the stand-ins for apt's numpy 1.26 and OpenCV 4: it must leave them alone. Then the whole suite
# against them, in the same two passes; TEST_MARKS='not slow' leaves out the slow tests.
test-jazzy: venv-jazzy
	@$(VENV_JAZZY)/bin/python -m pip install --disable-pip-version-check -q -r requirements/robot.txt 2>&1 | $(PIP_QUIET_FILTER)
	@$(VENV_JAZZY)/bin/python -c 'import sys, numpy, cv2, torch; print(f"test-jazzy: Python {sys.version.split()[0]}, numpy {numpy.__version__}, OpenCV {cv2.__version__}, torch {torch.__version__}"); assert numpy.__version__.startswith("1.26.") and cv2.__version__.startswith("4."), "installing robot.txt moved numpy or OpenCV"'
	$(call run_suite,$(JAZZY_TEST_ENV) $(VENV_JAZZY)/bin/python)

demo: venv
	ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST $(VENV)/bin/zoedepth-ros demo --out demo_report

# Rebuild the shipped demo model from scratch (docs/demo.md): synthetic bags with the training
# seeds, `zoedepth-ros train` with config/train_demo.yaml then config/train_demo_finetune.yaml,
# the float16 copy into the assets, then the held-out scores.
demo-model: venv
	$(VENV)/bin/python scripts/build_demo_model.py

clean-venv:
	rm -rf "$(VENV)" "$(VENV_JAZZY)"
