# The two newcomer commands (see README): `make demo` and `make test`.
# torch 2.14.1 + torchvision 0.29.1: Qwen2-VL-family processors need torchvision, and these two are the
# matching pair (pip takes them from local disk on the dev/CI machines). A bare `torch` would pull
# whatever CUDA build is newest.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH := torch==2.14.1 torchvision==0.29.1
DEMO_MODEL := .tiny/llava

.PHONY: setup demo test lint clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[test]'
	touch $@

# Until the trained demo model lands (issue #4), the scan runs on a tiny random-weight LLaVA checkpoint
# that this builds: the answer is gibberish, but every stage (image, processor, vision tower, streaming)
# is the real one.
demo: setup
	test -d $(DEMO_MODEL) || $(BIN)/python -m optascan.testing.tiny $(DEMO_MODEL) --family llava
	$(BIN)/optascan scan --model $(DEMO_MODEL) examples/shelf.jpg "What is on the shelf?" --max-tokens 40 --seed 0

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check optascan tests bench

clean:
	rm -rf $(VENV) .tiny .pytest_cache
