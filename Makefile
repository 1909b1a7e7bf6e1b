# Every target bootstraps .venv itself; re-running is fast once the venv is up to date.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test lint demo bench gpu-check mutations stress clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Reinstall only when the dependency list changes.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# One intra-op thread per test process: on a 2-core box torch's default pool oversubscribes and stalls.
# PYTHONFAULTHANDLER: a native crash prints every thread's Python stack, also after pytest's own handler
# is gone (one stress run passed all its tests, then died of SIGSEGV at interpreter exit, silently).
test: $(STAMP)
	PYTHONFAULTHANDLER=1 OMP_NUM_THREADS=1 $(BIN)/python -m pytest -m "not gpu and not slow" -q

# Break the code on purpose: each mutation of .ci/mutations.py (a one-line patch on a clean checkout,
# restored after) must fail a test of `make test`. MUTATION_ARGS="--only NAME", "--list".
mutations: $(STAMP)
	$(BIN)/python .ci/mutations.py $(MUTATION_ARGS)

# The timing-dependent tests (interrupts, progress, cluster connects) 20 times in a row while two CPU
# burners share the cores; prints each run and the green count. STRESS_ARGS="--runs 5 --burners 4".
stress: $(STAMP)
	$(BIN)/python .ci/stress.py $(STRESS_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

# The quickstart suite on this machine: local Ray in-process, MLflow in .isosparse/mlflow.db, the built-in
# corpus. Re-running skips the jobs that already finished (delete .isosparse/ to start over).
demo: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/isosparse run suites/quickstart.yaml

# Every benchmark section in one table per thread count (BENCH_ARGS="--threads 1 2" sweeps); JSON in .isosparse/bench/.
bench: $(STAMP)
	$(BIN)/python -m workloads.bench all $(BENCH_ARGS)

# For a lent GPU machine (Python, torch, triton, numpy; no pip, no network): needs no venv, runs from a
# plain checkout. GPU_CHECK_ARGS=--dry-run runs the same code paths on CPU with tiny shapes.
GPU_CHECK_OUT ?= gpu_check_out
gpu-check:
	PYTHONPATH=. $(PY) -m workloads.gpu_check --out $(GPU_CHECK_OUT) $(GPU_CHECK_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
