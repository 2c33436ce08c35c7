PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_OUT ?= demo-out

.PHONY: setup test lint demo bench clean

setup:  ## venv + every dependency (no system packages needed)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m vidal.doctor

test:  ## the whole test suite (pytest exits non-zero when no test ran)
	$(BIN)/ruff check vidal tests scripts
	$(BIN)/python -m pytest -q

lint:
	$(BIN)/ruff check vidal tests scripts

demo:  ## offline: real sample videos + generated clips -> all stages -> shards
	$(BIN)/vidal demo --out $(DEMO_OUT)

bench:  ## throughput figures as ratios against ffmpeg run in the same process
	$(BIN)/python scripts/bench.py

clean:
	rm -rf $(DEMO_OUT) bench-out .pytest_cache
