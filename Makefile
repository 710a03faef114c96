# The README's two commands: `make run` and `make test`. Both create .venv on first use and reinstall
# only when pyproject.toml changed (the stamp file), so repeated runs start in seconds.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# Two pytest processes (pytest-xdist), one test file each at a time: most tests wait on subprocesses (workers,
# servers, a browser), so the second core is otherwise idle. PYTEST_WORKERS=0 runs everything in one process.
PYTEST_WORKERS ?= 2

.PHONY: install run test bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e '.[test]'
	touch $(STAMP)

# The embedded platform: SQLite, a bundled Redis, local artifacts, one worker and the API on :8000.
run: $(STAMP)
	$(VENV)/bin/dcgan up --port 8000 --data-dir var

test: $(STAMP)
	@scripts/ensure_services.sh
	@scripts/ensure_test_data.sh
	@scripts/ensure_browser.sh
	$(VENV)/bin/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

bench: $(STAMP)
	$(VENV)/bin/python bench/train_throughput.py
	$(VENV)/bin/python bench/sample_latency.py

clean:
	rm -rf $(VENV) runs .pytest_cache
