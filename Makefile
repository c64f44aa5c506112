# The two commands a new user needs: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run test lint bench bench-fhir bench-sync clean viewer

# The OHIF viewer served at /viewer: its published dist, rebased to /viewer/ (git-ignored).
OHIF_VERSION := 3.13.2
VIEWER_DIR := .viewer/dist
VIEWER_STAMP := .viewer/ohif-$(OHIF_VERSION).stamp

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# Once per version (no network after that). Without npm, or when the download fails, this
# says so and goes on: the server runs without the viewer, and /viewer says how to install it.
viewer:
	@if [ -f $(VIEWER_STAMP) ] && [ -f $(VIEWER_DIR)/index.html ]; then :; \
	elif ! command -v npm >/dev/null 2>&1; then \
	  echo "npm not found: the OHIF viewer (/viewer) is not installed; install Node.js and npm, then run 'make viewer'"; \
	elif $(PYTHON) scripts/install_viewer.py --version $(OHIF_VERSION) --dest $(VIEWER_DIR); then \
	  rm -f .viewer/ohif-*.stamp && touch $(VIEWER_STAMP); \
	else \
	  echo "installing the OHIF viewer failed (see above); the server runs without /viewer"; \
	fi

run: $(STAMP) viewer
	$(BIN)/dicomhub serve --host 127.0.0.1 --port 8080 --data-dir ./data

test: $(STAMP) viewer
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(STAMP)
	bench/run

bench-fhir: $(STAMP)
	bench/fhir

bench-sync: $(STAMP)
	bench/sync

clean:
	rm -rf $(VENV) .viewer .pytest_cache .mypy_cache .ruff_cache
