# Two commands on a fresh machine: `make run` and `make test`. Each builds .venv when needed.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test check bench proto postgres postgres-stop clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,tensorflow,xgboost,postgres,torch]'
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/gyre demo

# The tests start their own PostgreSQL cluster; scripts/ensure-postgres installs its programs.
test: $(STAMP)
	scripts/ensure-postgres
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
	$(BIN)/python benchmarks/predlog.py
	$(BIN)/python benchmarks/batching.py
	$(BIN)/python benchmarks/ingest.py
	$(BIN)/python benchmarks/features.py
	$(BIN)/python benchmarks/train.py
	$(BIN)/python benchmarks/evaluate.py
	$(BIN)/python benchmarks/drift.py
	scripts/ensure-postgres
	$(BIN)/python benchmarks/stores.py
	$(BIN)/python benchmarks/tracking.py

# Under /tmp: as root the cluster runs as `postgres`, which may not enter a checkout's parents.
PGDIR ?= /tmp/gyre-postgres-$(shell id -u)

# A PostgreSQL cluster of your own on loopback, to try gyre on PostgreSQL: prints its URL
# (put it in [store] url or GYRE_STORE_URL). Stop it with `make postgres-stop`.
postgres: $(STAMP)
	@scripts/ensure-postgres
	@$(BIN)/python -m tests.pgcluster start $(PGDIR)

postgres-stop: $(STAMP)
	$(BIN)/python -m tests.pgcluster stop $(PGDIR)

clean:
	rm -rf $(VENV) .gyre .pytest_cache .mypy_cache .ruff_cache
