# The README's two commands: `make run` and `make test`. Both create .venv on first use and reinstall
# only when pyproject.toml changed (the stamp file), so repeated runs start in seconds.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install run test bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e '.[test]'
	touch $(STAMP)

# Until the platform server lands (`dcgan up`), `make run` trains a small DCGAN on the bundled digits and
# samples a seeded grid from it: the whole engine, end to end, in a few minutes on a laptop CPU.
run: $(STAMP)
	$(VENV)/bin/dcgan train --dataset digits --img-size 32 --steps 300 --out runs/demo --set sample_every=50
	$(VENV)/bin/dcgan sample --generator runs/demo/generator.safetensors --seeds 0-63 --grid runs/demo/seeds-0-63.png
	@echo "Trained runs/demo. Grid: runs/demo/seeds-0-63.png. Next: see README.md (dcgan train --help)."

test: $(STAMP)
	@scripts/ensure_services.sh
	@scripts/ensure_test_data.sh
	$(VENV)/bin/python -m pytest -q $(PYTEST_ARGS)

bench: $(STAMP)
	$(VENV)/bin/python bench/train_throughput.py
	$(VENV)/bin/python bench/sample_latency.py

clean:
	rm -rf $(VENV) runs .pytest_cache
