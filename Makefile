# Two front-door commands: `make repro` (pipeline on the embedded default) and `make test`.
# Both create .venv and install the pinned, CPU-only dependency set on first use.
VENV   ?= .venv
PYTHON ?= python3
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
MLFLOW := $(VENV)/.installed-mlflow
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: install repro test lint bench clean-venv

# The fused attention kernel (src/graphqa/csrc, model.attention_kernel: fused) is compiled
# once here with the host's g++ (installed from Debian if missing; ~25 s) into .venv.
# Byte-compiled at install (pip's default, plus our own src/): every stage is a new Python
# process, and where PYTHONDONTWRITEBYTECODE is set (as on this project's CI machine) nothing
# would ever cache the .pyc files, so each stage recompiled torch, Lightning and PyG from
# source -- about 6 s of every stage's 10 s start-up (measured: `import graphqa.train` 10.5 s
# without .pyc, 4.2 s with).
$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(BIN)/python -m compileall -q src
	command -v g++ >/dev/null || (apt-get update -qq && apt-get install -y -qq g++)
	$(BIN)/python -c "import graphqa.attention as a; a.kernel(a.native_isa())"
	touch $(STAMP)

# The optional MLflow extra (mlflow-skinny, pinned): `make test` needs it for the MLflow tests.
$(MLFLOW): $(STAMP) requirements-mlflow.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-mlflow.lock -c requirements.lock
	touch $(MLFLOW)

install: $(STAMP)

repro: install
	$(BIN)/dvc repro

# Two pytest workers (pytest-xdist), whole files per worker: a file's module-scoped fixtures
# (the e2e test's reproduced repo copy) are built once. 12 min 40 s serial -> 9 min 33 s here.
PYTEST_WORKERS ?= 2
test: install $(MLFLOW)
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile

lint: install
	$(BIN)/ruff check src stages tests benchmarks
	$(BIN)/ruff format --check src stages tests benchmarks

bench: install
	$(BIN)/python benchmarks/load_packed.py
	$(BIN)/python benchmarks/train_throughput.py
	$(BIN)/python benchmarks/numerics_cost.py
	$(BIN)/python benchmarks/compile_speedup.py
	$(BIN)/python benchmarks/predict_throughput.py --compile

clean-venv:
	rm -rf $(VENV)
