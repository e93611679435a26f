# The two newcomer commands (see README): `make demo` and `make test`.
# torch 2.14.1 + torchvision 0.29.1: Qwen2-VL-family processors need torchvision, and these two are the
# matching pair (pip takes them from local disk on the dev/CI machines). A bare `torch` would pull
# whatever CUDA build is newest.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: setup demo test lint clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[test]'
	touch $@

# The default model is the demo VLM shipped inside the package (optascan/models/demo): no download.
demo: setup
	$(BIN)/optascan scan examples/shapes.jpg "How many red circles are there?"

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check optascan tests bench

clean:
	rm -rf $(VENV) .tiny .pytest_cache
