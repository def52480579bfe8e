# Two commands on a fresh machine: `make run` and `make test`. Each builds .venv when needed.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test check bench proto clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,tensorflow,xgboost]'
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/gyre demo

test: $(STAMP)
	$(BIN)/python -m pytest

check: $(STAMP)
	$(BIN)/ruff check gyre tests benchmarks
	$(BIN)/ruff format --check gyre tests benchmarks
	$(BIN)/mypy

# The Python code of the v2 gRPC messages, from gyre/serve/protocols/grpc_predict_v2.proto.
proto: $(STAMP)
	$(BIN)/python -m tests.serve.protogen

bench: $(STAMP)
	$(BIN)/python benchmarks/serve.py
	$(BIN)/python benchmarks/serve.py --workers 2
	$(BIN)/python benchmarks/app.py
	$(BIN)/python benchmarks/batching.py
	$(BIN)/python benchmarks/ingest.py
	$(BIN)/python benchmarks/features.py

clean:
	rm -rf $(VENV) .gyre .pytest_cache .mypy_cache .ruff_cache
