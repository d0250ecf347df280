# cyclelib: build the book and run every test.
#
#   make book       create .venv if needed, build the HTML book into _build/html
#   make test       unit tests, notebooks (nbval, smoke scale), strict book build,
#                   browser test (when tests/browser exists)
#   make test-fast  the unit tests not marked slow, for the inner loop (under 5 minutes
#                   on 2 cores): no notebooks, no book build, no browser test
#   make clean      remove build outputs (keeps .venv); `make distclean` removes .venv too
#
# Everything runs through .venv/bin, so no activated environment is needed.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# jupyter-book 1.x has no `python -m` entry point; its console script lives in the venv.
JUPYTER_BOOK := $(VENV)/bin/jupyter-book
STAMP := $(VENV)/.installed

# Warnings are errors (-W), missing references are warnings (-n), and
# --keep-going reports all of them before failing.
BOOK_FLAGS := -W -n --keep-going

# The browser test (tests/browser) needs Debian's chromium and its driver, and a
# CJK font so that screenshots of the Chinese text are readable.
BROWSER_TESTS := $(wildcard tests/browser)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: venv book test test-fast browser-deps clean distclean gpu-check

venv: $(STAMP)

# Reinstall only when pyproject.toml changes (the stamp is older than it).
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -e '.[book,test]'
	touch $(STAMP)

book: $(STAMP)
	$(JUPYTER_BOOK) build . $(BOOK_FLAGS)
	@echo "Open _build/html/index.html"

browser-deps:
	command -v chromium >/dev/null && command -v chromedriver >/dev/null && fc-list :lang=zh | grep -q . || { \
	  $(SUDO) apt-get update && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y chromium chromium-driver fonts-noto-cjk; }

# Every step runs at the smoke scale: tiny networks and a few iterations.
test: export CYCLELIB_SCALE := smoke
test: $(STAMP) $(if $(BROWSER_TESTS),browser-deps)
	$(PY) -m pytest tests --ignore=tests/browser
	@# Notebooks: outputs are compared loosely (--nbval-lax checks only cells
	@# marked NBVAL_CHECK_OUTPUT). No notebooks yet, or pytest's exit code 5
	@# ("no tests collected"), is not a failure for this step.
	if [ -n "$$(find book -name '*.ipynb' -not -path '*/.ipynb_checkpoints/*' -print -quit)" ]; then \
	  $(PY) -m pytest --nbval-lax --nbval-current-env book || [ $$? -eq 5 ]; \
	else echo "No notebooks in book/: nbval step skipped"; fi
	@# --all rebuilds every page, so warnings of unchanged pages are seen too.
	$(JUPYTER_BOOK) build . $(BOOK_FLAGS) --all
	$(if $(BROWSER_TESTS),$(PY) -m pytest tests/browser,@echo "No tests/browser: browser test skipped")

# The inner loop: the unit tests at the smoke scale without those marked slow
# (@pytest.mark.slow: the costliest runs, subprocesses and kills); `make test` runs them all.
test-fast: export CYCLELIB_SCALE := smoke
test-fast: $(STAMP)
	$(PY) -m pytest tests --ignore=tests/browser -m "not slow"

# One command that checks a GPU in under 8 minutes (benchmarks/gpu_check.py): the
# device tests on CUDA, the benchmark at 256x256, a smoke CyCADA run and a one-process
# torchrun through NCCL, FID/KID with the real Inception-v3 (skipped where its weights cannot
# be downloaded); a table, and every step's result in gpu-check.json. Without CUDA,
# a CPU dry run of the same steps. No venv step here (it would need the network):
# `make gpu-check PY=python3` uses another Python; GPU_CHECK_ARGS="--smoke" passes options.
gpu-check:
	$(PY) benchmarks/gpu_check.py $(GPU_CHECK_ARGS)

clean:
	rm -rf _build .pytest_cache .hypothesis *.egg-info
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
