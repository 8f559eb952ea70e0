# Two commands for a new user (see README):  make serve   |   make test
PYTHON ?= python3
UV := $(shell command -v uv 2>/dev/null || echo "$(HOME)/.local/bin/uv")
DATA_DIR ?= var
PORT ?= 8000

.PHONY: install serve test lint typecheck bench clean

$(UV):
	$(PYTHON) -m pip install --user --quiet uv || $(PYTHON) -m pip install --quiet uv

install: $(UV)
	$(UV) sync --frozen

serve: install
	$(UV) run eoffice serve --data-dir $(DATA_DIR) --port $(PORT)

test: install
	$(UV) run python -m pytest -q

lint: install
	$(UV) run ruff check eoffice workers tests bench
	$(UV) run mypy eoffice workers

typecheck: install
	$(UV) run mypy eoffice workers

bench: install
	$(UV) run python bench/signing.py
	$(UV) run python bench/verification.py

clean:
	rm -rf .venv .pytest_cache test-artifacts
